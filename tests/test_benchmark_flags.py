"""The train-step benchmark refuses to present a ratio measured on an overloaded CPU."""
from benchmarks import train_step


def test_ratio_flagged_when_load_exceeds_cores():
    assert train_step.ratio_verdict(1.5, "cpu", cores=2) is None
    assert "not a result" in train_step.ratio_verdict(4.2, "cpu", cores=2)
    assert train_step.ratio_verdict(40.0, "gpu", cores=2) is None  # host load does not time the device


def test_gin_model_sizes_are_the_projects_own():
    cfg = train_step.model_config("350m", "bfloat16", attention="blockwise")
    assert (cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.dtype, cfg.attention) == (1024, 24, 32000, "bfloat16",
                                                                                    "blockwise")
