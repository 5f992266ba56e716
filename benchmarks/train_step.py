"""Training-step throughput: sleeper's jitted step vs PyTorch on the identical model.

    python -m benchmarks.train_step                 # CPU: 3M and 25M, fp32 and bf16, table
    python -m benchmarks.train_step --json          # one JSON object per measurement
    python -m benchmarks.train_step --scaling       # also batch x2 and seq x2 per size
    python -m benchmarks.train_step --device gpu --sizes 350m --dtypes bfloat16 --batch 8 --seq 2048 \
        --peers eager compile                       # torch eager (SDPA, fused AdamW) and torch.compile on CUDA
    python -m benchmarks.train_step --device tpu --sizes 1b --peers   # sleeper alone (no torch on TPU)

Sizes are the CPU shapes below or any `configs/models/<name>.gin` (350m, 1b, 7b, ...).
Peak memory is the device's own peak (`memory_stats` / `torch.cuda.max_memory_allocated`)
on an accelerator, peak resident host memory on CPU. On CPU a ratio measured while the
one-minute load exceeds the core count is printed in parentheses and marked invalid:
the two sides then compete with other processes unequally, and the figure means nothing.

Both sides mask alike: `--packing unpacked` (one sequence per row) runs causal attention with
no mask on both (sleeper's lm objective with packed=False: cuDNN's plain causal kernel on
GPU; torch's SDPA with is_causal); `packed` gives each row four segments and both sides a
causal-and-same-segment mask (sleeper's [b, 1, t, s] mask; torch's SDPA attn_mask).

`--end-to-end` adds a `sleeper_train` row: `sleeper train` itself on the copy task at the
same size, dtype and shape, its tokens/s read from its own metrics.jsonl (median over the
logged steps after the warm-up), so the table shows what the trainer delivers around the
jitted step (data, placement, logging).

Every measurement runs in its own subprocess (so peak host memory is that run's alone),
sleeper and torch alternating for each (size, dtype, shape). Step times are medians
over the timed steps, which keeps a busy shared machine from skewing one side.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import sys

from benchmarks import report

MODULE = "benchmarks.train_step"

# Llama-shaped: d_ff ~ 8/3 d_model (a multiple of 64), head_dim 64, two query heads per KV head.
# The names count non-embedding parameters; the 4096-token vocabulary adds 2 x 4096 x d_model.
SIZES = {
    "3M": dict(vocab_size=4096, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=704),
    "25M": dict(vocab_size=4096, d_model=512, n_layers=8, n_heads=8, n_kv_heads=4, d_ff=1408),
}
DTYPES = ("float32", "bfloat16")
DEVICES = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}  # --device -> JAX_PLATFORMS
PEERS = ("eager", "compile")
PACKING = ("unpacked", "packed")
SEGMENTS_PER_PACKED_ROW = 4
COLUMNS = ("device", "size", "dtype", "batch", "seq", "packing", "side", "tokens_per_s", "tflops", "mfu", "vs_sleeper",
           "compile_s", "peak_mem_mib", "load")


def _size_configs(size: str):
    """(ModelConfig, ComputeConfig) of a CPU benchmark shape, or of the project's own `configs/models/<size>.gin`."""
    from sleeper.model.config import ComputeConfig, ModelConfig
    if size in SIZES:
        return ModelConfig(**SIZES[size]), ComputeConfig()
    import gin

    from sleeper.config import REPO_ROOT
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO_ROOT))
    gin.parse_config_file(str(REPO_ROOT / "configs" / "models" / f"{size}.gin"))
    configs = ModelConfig.from_gin(), ComputeConfig.from_gin()
    gin.clear_config()
    return configs


def model_config(size: str):
    """The architecture of a benchmark size."""
    return _size_configs(size)[0]


def compute_config(size: str, dtype: str, **overrides):
    """How sleeper's side computes at a benchmark size: its model file's settings, then `dtype` and `overrides`."""
    return _size_configs(size)[1].replace(dtype=dtype, **overrides)


def _batch(vocab_size: int, batch: int, seq: int, packing: str = "unpacked") -> dict:
    """Copy-task rows; `packed` splits each row into SEGMENTS_PER_PACKED_ROW segments (positions restart)."""
    import numpy as np

    from sleeper.data.synthetic import CopyIterator
    rows = next(CopyIterator(vocab_size, batch, seq, seed=0, offset=0, stride=1))
    if packing == "packed":
        span = max(1, seq // SEGMENTS_PER_PACKED_ROW)
        index = np.arange(seq)
        rows["segment_ids"] = np.broadcast_to(1 + index // span, (batch, seq)).astype(np.int32)
        rows["positions"] = np.broadcast_to(index % span, (batch, seq)).astype(np.int32)
    return rows


def sleeper_worker(spec: dict) -> dict:
    """Build the sharded state and jitted step exactly as the trainer does, then time it."""
    import time

    import flax.linen as nn
    import jax

    from sleeper.runtime import compile_options, sharding
    from sleeper.model.transformer import Transformer, init_params
    from sleeper.train import objectives
    from sleeper.train.optim import OptimizerSettings, lr_schedule, make_optimizer
    from sleeper.train.state import init_state, state_shardings
    from sleeper.train.step import make_train_step

    from sleeper.train.metrics import peak_flops

    cfg = model_config(spec["size"])
    compute = compute_config(spec["size"], spec["dtype"], **spec.get("overrides", {}))
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    rules = sharding.logical_axis_rules()
    tx = make_optimizer(OptimizerSettings(), lr_schedule(peak=3e-4, warmup_steps=0, total_steps=10**6))
    init_boxed = functools.partial(init_params, cfg, compute)
    state = init_state(init_boxed, tx, mesh, seed=0, rules=rules)
    _, shardings = state_shardings(init_boxed, tx, mesh, rules)
    module = Transformer(cfg, compute)
    packed = spec.get("packing", "unpacked") == "packed"
    step = make_train_step(objectives.lm_objective(packed=packed), lambda p, *a, **k: module.apply({"params": p}, *a, **k),
                           tx, skip_nonfinite=spec.get("skip_nonfinite", True))
    batch = sharding.shard_batch(_batch(cfg.vocab_size, spec["batch"], spec["seq"], spec.get("packing", "unpacked")),
                                 mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        jitted = jax.jit(step, in_shardings=(shardings, sharding.batch_sharding(mesh)),
                         out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
        start = time.perf_counter()
        compiled = jitted.lower(state, batch).compile(compiler_options=compile_options.train_step_options(
            cpu_ynnpack=spec.get("cpu_ynnpack", True)))
        compile_s = time.perf_counter() - start
        holder = {"state": state}

        def one_step():
            holder["state"], metrics = compiled(holder["state"], batch)
            jax.block_until_ready((holder["state"], metrics))

        times = report.time_calls(one_step, warmup=spec["warmup"], steps=spec["steps"])
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    peak_mib = stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else report.peak_rss_mib()
    return {"step_s": report.median(times), "compile_s": compile_s, "peak_mem_mib": peak_mib,
            "peak_flops": peak_flops(device), "device_kind": device.device_kind}


def torch_worker(spec: dict) -> dict:
    """PyTorch eager (SDPA, fused AdamW) or, with peer=compile, the same model under torch.compile."""
    import time

    import torch

    from benchmarks import torch_reference as ref

    device = "cuda" if spec["device"] == "gpu" else "cpu"
    torch.manual_seed(0)
    cfg = model_config(spec["size"])
    model = ref.TorchTransformer(cfg).to(device)
    opt = ref.make_optimizer(model, fused=spec.get("fused", True))
    if spec["peer"] == "compile":
        model = torch.compile(model)
    packing = spec.get("packing", "unpacked")
    step = ref.TorchStep(model, opt, torch.bfloat16 if spec["dtype"] == "bfloat16" else None,
                         packed=packing == "packed")
    batch = ref.to_torch_batch(_batch(cfg.vocab_size, spec["batch"], spec["seq"], packing), device)
    start = time.perf_counter()
    float(step(batch))  # reading the loss back waits for the device
    first_s = time.perf_counter() - start
    times = report.time_calls(lambda: float(step(batch)), warmup=spec["warmup"], steps=spec["steps"])
    peak_mib = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else report.peak_rss_mib()
    return {"step_s": report.median(times), "compile_s": first_s if spec["peer"] == "compile" else float("nan"),
            "peak_mem_mib": peak_mib, "threads": torch.get_num_threads()}


def train_command(spec: dict, run_dir: str) -> list[str]:
    """The `sleeper train` command line for an end-to-end row: the copy task at the spec's size and shape."""
    size = spec["size"]
    cfg = model_config(size)
    model = ([f"--gin.ModelConfig.{k}={v}" for k, v in SIZES[size].items()] if size in SIZES
             else [f"--gin_file=configs/models/{size}.gin"])
    compute = [f"--gin.ComputeConfig.{k}='{v}'" for k, v in spec.get("overrides", {}).items()]
    return [sys.executable, "-m", "sleeper.cli", "train", "--gin_file=configs/experiments/tiny_copy.gin", *model,
            f"--gin.CopyTaskData.vocab_size={cfg.vocab_size}", f"--gin.ComputeConfig.dtype='{spec['dtype']}'",
            *compute, f"--gin.compile_options.cpu_ynnpack={spec.get('cpu_ynnpack', True)}",
            f"--gin.train.run_dir='{run_dir}'", f"--gin.train.batch_size={spec['batch']}",
            f"--gin.train.seq_len={spec['seq']}", f"--gin.train.steps={spec['warmup'] + spec['steps']}",
            "--gin.train.log_every=1", "--gin.train.eval_every=0", "--gin.train.warmup_steps=0",
            f"--gin.train.checkpoint_every={10 ** 9}", "--gin.train.progress=False"]


def logged_step_s(rows: list[dict], warmup: int) -> float:
    """Median seconds per step over the logged rows after `warmup` (from tokens/s and tokens per step)."""
    timed = [r["step_s"] for r in rows if r["step"] > warmup and "step_s" in r]
    if not timed:
        raise report.WorkerFailed(f"no logged step after the first {warmup} in the end-to-end run's metrics")
    return report.median(timed)


def end_to_end(spec: dict) -> dict:
    """`sleeper train` in its own process; its step time as its own metrics log it."""
    import subprocess
    import tempfile

    from sleeper.config import REPO_ROOT
    from sleeper.train.metrics import read_metrics
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(train_command(spec, tmp), cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600)
        if done.returncode:
            raise report.WorkerFailed(f"sleeper train failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        rows = read_metrics(tmp, "train")
    return {"step_s": logged_step_s(rows, spec["warmup"]), "compile_s": float("nan"), "peak_mem_mib": float("nan")}


def ratio_verdict(load: float, device: str, cores: int | None = None) -> str | None:
    """Why a sleeper/torch ratio from this run is not a result, or None when it is one."""
    cores = cores or os.cpu_count() or 1
    if device == "cpu" and load > cores:
        return f"one-minute load {load:.1f} > {cores} cores: not a result, rerun on a quiet machine"
    return None


def shown_ratio(ratio: float, verdict: str | None) -> str:
    """A ratio as the tables print it: in parentheses when `ratio_verdict` says it is not a result."""
    return f"({ratio:.2f}x)" if verdict else f"{ratio:.2f}x"


def measure(device: str, size: str, dtype: str, batch: int, seq: int, steps: int, warmup: int,
            peers: list[str], overrides: dict, cpu_ynnpack: bool = True, packing: str = "unpacked",
            e2e: bool = False) -> list[dict]:
    """Rows for sleeper and each torch peer on the same shape and masking, each in a fresh process."""
    from sleeper.model.config import flops_per_token
    spec = dict(device=device, size=size, dtype=dtype, batch=batch, seq=seq, steps=steps, warmup=warmup,
                overrides=overrides, cpu_ynnpack=cpu_ynnpack, packing=packing)
    load = report.host_load()
    results = {"sleeper": report.run_worker(MODULE, {**spec, "framework": "sleeper"})}
    failed = []
    for peer in peers:
        try:
            results[f"torch_{peer}"] = report.run_worker(MODULE, {**spec, "framework": "torch", "peer": peer})
        except report.WorkerFailed as err:  # e.g. out of memory: the other rows still stand
            failed.append(dict(size=size, dtype=dtype, batch=batch, seq=seq, packing=packing, side=f"torch_{peer}",
                               verdict=f"failed: {str(err).strip().splitlines()[-1]}"))
    if e2e and packing == "unpacked":  # the copy task's rows are one sequence each
        try:
            results["sleeper_train"] = end_to_end(spec)
        except report.WorkerFailed as err:
            failed.append(dict(size=size, dtype=dtype, batch=batch, seq=seq, packing=packing, side="sleeper_train",
                               verdict=f"failed: {str(err).strip().splitlines()[-1]}"))
    load = max(load, report.host_load())
    verdict = ratio_verdict(load, device)
    tokens = batch * seq
    flops = flops_per_token(model_config(size), seq) * tokens
    peak = results["sleeper"]["peak_flops"]
    rows = []
    for side, r in results.items():
        ratio = results["sleeper"]["step_s"] / r["step_s"]  # peer tokens/s over sleeper's
        rows.append(dict(device=results["sleeper"]["device_kind"], size=size, dtype=dtype, batch=batch, seq=seq,
                         packing=packing, side=side, step_s=r["step_s"], tokens_per_s=tokens / r["step_s"],
                         tflops=flops / r["step_s"] / 1e12, mfu=flops / r["step_s"] / peak,
                         vs_sleeper="-" if side == "sleeper" else shown_ratio(ratio, verdict),
                         ratio_valid=verdict is None, verdict=verdict or "", compile_s=r["compile_s"],
                         peak_mem_mib=r["peak_mem_mib"], peak_flops=peak, steps=steps, load=load))
    return rows + failed


def shapes(batch: int, seq: int, scaling: bool) -> list[tuple[int, int]]:
    return [(batch, seq), (2 * batch, seq), (batch, 2 * seq)] if scaling else [(batch, seq)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=list(DEVICES))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES),
                        help=f"{', '.join(SIZES)} or a configs/models/<name>.gin stem")
    parser.add_argument("--peers", nargs="*", default=["eager"], choices=PEERS,
                        help="torch sides to race (compile: torch.compile, GPU only); none for sleeper alone")
    parser.add_argument("--attention", default="auto", help="ComputeConfig.attention for sleeper's side")
    parser.add_argument("--remat", default="none", help="ComputeConfig.remat for sleeper's side")
    parser.add_argument("--cpu-ynnpack", default="on", choices=("on", "off"),
                        help="CPU: let XLA use YNNPACK's matmul kernels (on, its default) or Eigen's (off); "
                             "see compile_options.cpu_ynnpack")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--packing", nargs="+", default=["unpacked"], choices=PACKING,
                        help="unpacked: one sequence per row, no mask on either side; packed: four segments a row, "
                             "a segment mask on both")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median is reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--scaling", action="store_true", help="also measure batch x2 and sequence x2")
    parser.add_argument("--end-to-end", dest="e2e", action="store_true",
                        help="also run `sleeper train` at each unpacked shape and report its own logged tokens/s")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    report.add_output_flags(parser)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        result = (sleeper_worker if spec["framework"] == "sleeper" else torch_worker)(spec)
        print(json.dumps(result), flush=True)
        return
    os.environ["JAX_PLATFORMS"] = DEVICES[args.device]
    if args.device == "tpu" and args.peers:
        parser.error("--device tpu has no torch peer here; pass --peers with nothing after it")
    if args.device == "cpu" and "compile" in args.peers:
        parser.error("--peers compile is measured on GPU only (--device gpu)")
    overrides = dict(attention=args.attention, remat=args.remat)
    rows = []
    for size in args.sizes:
        for dtype in args.dtypes:
            for (batch, seq), packing in itertools.product(shapes(args.batch, args.seq, args.scaling), args.packing):
                new = measure(args.device, size, dtype, batch, seq, args.steps, args.warmup, args.peers, overrides,
                              cpu_ynnpack=args.cpu_ynnpack == "on", packing=packing, e2e=args.e2e)
                rows += new
                if args.json:
                    report.emit(new, COLUMNS, as_json=True)
    if not args.json:
        report.emit(rows, COLUMNS, as_json=False)
        for verdict in sorted({r["verdict"] for r in rows if r["verdict"]}):
            print(f"Ratios in parentheses: {verdict}.")


if __name__ == "__main__":
    main()
