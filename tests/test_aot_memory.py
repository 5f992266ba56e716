"""benchmarks/aot_memory.py compiles the real train step for a TPU slice on this CPU host."""
import pytest

from benchmarks import aot_memory


@pytest.mark.slow  # one TPU compile of a 1M model for 16 chips: ~2 min on the shared 2-core CPU
@pytest.mark.skipif(not aot_memory.libtpu_available(),
                    reason="libtpu is not installed (pip install --target DIR 'libtpu==0.0.42.*', DIR on PYTHONPATH)")
def test_small_slice_compiles_within_hbm(monkeypatch):
    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    row = aot_memory.compile_step("tpu_v5e_16", "1m", 256, [])
    assert row["chips"] == 16 and row["mesh"] == "1x16x1" and row["remat"] == "full"
    assert 0 < row["per_chip_gib"] < row["hbm_gib"] and row["fits"] == "yes"
