"""What every launcher shares: quoting, dry runs, and running a list of commands."""
from __future__ import annotations

import shlex
import subprocess
from typing import Sequence


def quote(cmd: Sequence[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def run_or_print(commands: list[list[str]], dry_run: bool) -> int:
    """Print each command (always), run them in order unless dry_run; stop at the first failure."""
    for cmd in commands:
        print(quote(cmd), flush=True)
        if not dry_run:
            code = subprocess.call(cmd)
            if code:
                return code
    return 0
