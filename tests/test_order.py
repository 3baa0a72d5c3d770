"""The seeded shuffle of a training stream (data/order.py): a pure function of the rows and
(seed, rank, epoch); every row once per epoch."""

from __future__ import annotations

import pytest

from vlmsweep.data.order import StreamOrder, seeded_shuffle


@pytest.mark.parametrize("buffer", [2, 7, 100, 1000])
def test_every_row_comes_once(buffer):
    rows = list(range(100))
    out = list(seeded_shuffle(iter(rows), buffer, (0, 0, 0)))
    assert sorted(out) == rows and out != rows


def test_same_key_same_order_and_any_other_key_another():
    rows = list(range(200))
    order = StreamOrder(seed=3, rank=0, buffer=64)
    first = list(order.epoch(iter(rows), 0))
    assert list(StreamOrder(seed=3, rank=0, buffer=64).epoch(iter(rows), 0)) == first
    others = [list(StreamOrder(seed=4, rank=0, buffer=64).epoch(iter(rows), 0)),
              list(StreamOrder(seed=3, rank=1, buffer=64).epoch(iter(rows), 0)),
              list(order.epoch(iter(rows), 1))]   # each epoch is ordered anew
    assert all(o != first for o in others)


def test_no_buffer_keeps_the_order_as_read():
    rows = list(range(50))
    assert list(StreamOrder(seed=3, rank=0, buffer=0).epoch(iter(rows), 5)) == rows
    assert list(StreamOrder(seed=3, rank=0, buffer=1).epoch(iter(rows), 5)) == rows


def test_a_buffer_at_least_the_epoch_draws_any_permutation():
    # the first row can land anywhere, not only within `buffer` places of where it was read
    firsts = {list(seeded_shuffle(iter(range(10)), 16, (seed,))).index(0) for seed in range(200)}
    assert firsts == set(range(10))
