"""What every benchmark script shares: timing, peak memory, and the table / JSON output.

Each script produces a list of flat dicts (one per measurement); `emit` prints them as
an aligned table for people or, with `--json`, one JSON object per line for tools.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Iterable, Sequence


class WorkerFailed(RuntimeError):
    """A measurement subprocess exited without printing its result."""


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per measurement instead of a table")


def time_calls(fn: Callable[[], object], *, warmup: int, steps: int) -> list[float]:
    """Seconds per call of `fn` (which must block until its work is done), after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def host_load() -> float:
    """One-minute load average: other processes on a shared machine skew timings."""
    return os.getloadavg()[0]


def run_worker(module: str, spec: dict, timeout: float = 1800) -> dict:
    """Run `python -m module --worker SPEC` in a fresh process and return the JSON it prints last.

    A fresh process per measurement keeps the peak-memory figure to that measurement
    alone and stops one framework's thread pools from slowing the other's.
    """
    cmd = [sys.executable, "-m", module, "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise WorkerFailed(f"benchmark worker `{' '.join(cmd)}` failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _fmt(value) -> str:
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1e4:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.3g}"
    return str(value)


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Aligned plain-text table of `columns` (missing cells print as '-')."""
    cells = [[_fmt(r.get(c, "-")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def emit(rows: Sequence[dict], columns: Sequence[str], as_json: bool, out=None) -> None:
    out = out or sys.stdout
    if as_json:
        for r in rows:
            print(json.dumps(r, sort_keys=True), file=out, flush=True)
    else:
        print(format_table(rows, columns), file=out, flush=True)
