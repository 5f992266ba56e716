"""The input-pipeline benchmark prints the fields its README and issue 29 name, with numbers that add up."""
import json

from benchmarks import input_pipeline

FIELDS = {"data", "mode", "batch", "seq_len", "processes", "process_index", "real_tokens_per_s",
          "seconds_per_global_batch", "load"}


def test_smallest_case_prints_json_rows_with_the_named_fields(capsys):
    assert input_pipeline.main(["--smallest", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    pipeline = [r for r in rows if r["table"] == "pipeline"]
    assert [(r["processes"], r["process_index"]) for r in pipeline] == [(1, 0), (4, 0)]
    for r in pipeline:
        assert FIELDS <= set(r) and r["data"] == "short" and r["mode"] == "pack"
        assert r["real_tokens_per_s"] > 0 and 0.5 < r["fill"] <= 1
        # a process fills only its own rows: at most batch / processes rows of seq_len tokens per global batch
        tokens_per_batch = r["real_tokens_per_s"] * r["seconds_per_global_batch"]
        assert r["fill"] * 0.99 <= tokens_per_batch / (r["batch"] // r["processes"] * r["seq_len"]) <= 1.0
    consumption = [r for r in rows if r["table"] == "consumption"]
    assert {r["hardware"] for r in consumption} >= {"gpu_8x", "tpu_v6e_256"}
    for r in consumption:  # headroom: the one-process rate measured above over what one host consumes
        assert abs(r["short_headroom"] * r["tokens_per_s_per_host"] / pipeline[0]["real_tokens_per_s"] - 1) < 1e-9


def test_synthetic_hh_dialogues_have_the_shape_of_the_real_ones():
    records = input_pipeline.synthetic_hh_records(400)
    turns = [len(r["turns"]) for r in records]
    words = [sum(len(t["text"].split()) for t in r["turns"]) for r in records]
    assert all(n % 2 == 0 for n in turns) and 4 <= sum(turns) / len(turns) <= 6  # HH: 5.0 turns on average
    assert 70 <= sorted(words)[len(words) // 2] <= 110  # HH's median: 86 words
