"""Small HH-RLHF folders in the format of Anthropic's files (`<subset>-<split>.jsonl.gz`, each
line a chosen and a rejected "\\n\\nHuman: ...\\n\\nAssistant: ..." dialogue), for tests that
set prompt_sources.hh_rlhf_dir without the real data."""
import gzip
import json
from pathlib import Path


def hh_lines(dialogues: list[list[str]]) -> list[str]:
    """HH-RLHF lines from dialogues given as alternating human/assistant texts; the rejected side
    is the chosen one with a worse last answer."""
    out = []
    for texts in dialogues:
        body = "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(texts))
        out.append(json.dumps({"chosen": body, "rejected": body + " (worse)"}) + "\n")
    return out


def write_hh_rlhf(folder: Path, files: dict[str, list[str]]) -> Path:
    """files: {'harmless-base-train': lines, ...} -> folder/<name>.jsonl.gz."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        with gzip.open(folder / f"{name}.jsonl.gz", "wt") as f:
            f.writelines(lines)
    return folder


_TOPICS = ("bread", "rivers", "chess", "violins", "tides", "owls", "glass", "maps", "tea", "bridges", "comets", "moss")
_ASKS = ("How do I get started with {t}?", "What is one surprising fact about {t}?",
         "Can you explain {t} to a child?", "Why do people care about {t}?")


def synthetic_hh_rlhf(folder: Path, per_split: dict[str, int] | None = None,
                      subsets=("harmless-base", "helpful-base")) -> Path:
    """Every subset's train and test files with short, distinct one-exchange dialogues (the test
    split's questions differ from the train split's, as the real files' do)."""
    per_split = per_split or {"train": 96, "test": 24}
    files = {}
    for s, subset in enumerate(subsets):
        for split, n in per_split.items():
            dialogues = [[f"{_ASKS[i % len(_ASKS)].format(t=_TOPICS[i // len(_ASKS) % len(_TOPICS)])} "
                          f"({subset} {split} {i})", f"Here is a short answer about it, number {i}."]
                         for i in range(n)]
            files[f"{subset}-{split}"] = hh_lines(dialogues)
    return write_hh_rlhf(folder, files)
