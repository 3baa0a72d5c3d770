"""The seeded order of a training stream: a buffer shuffle, per rank and epoch.

Each rank reads its rows in a fixed order (data/stream.py). Within an epoch they pass
through a shuffle buffer whose random draws come from (seed, rank, epoch) alone, so:
- the same seed gives the same order on every run, and another seed another order: the
  seed axis of a grid varies the data order too, as the papers' reruns did;
- the order is a pure function of the rank's rows and those three numbers, so a resumed
  stage rebuilds the epoch's order and finds its place by position (StreamState), exactly
  as without shuffling.

Why not Ray Data's `local_shuffle_buffer_size`: its output depends on how rows fall into
blocks and batches, which is not part of Ray's contract and can change between versions,
while a checkpoint's stream position has to name the same row after a restart.

Why a buffer and not a permutation of the epoch: a large split streams from its shards and
is never held whole. With an epoch shorter than the buffer (every miniature split) the
order is a full permutation; with a longer one a row moves at most about `buffer` places
earlier, and anywhere later. The buffer holds prepared samples, pixels included: at 336 px
one sample is ~1.4 MB, so the default 512 costs ~0.7 GB of memory per worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")

# In every stage id (train/stage.py): bump it when the order `seeded_shuffle` gives changes,
# so stages trained in the old order are not reused as if trained in the new one.
ORDER_VERSION = 1


@dataclass(frozen=True)
class StreamOrder:
    """How one rank's stream is ordered: shuffled from (seed, rank, epoch), or as read when
    `buffer` < 2."""

    seed: int
    rank: int
    buffer: int

    def epoch(self, rows: Iterable[T], epoch: int) -> Iterator[T]:
        return seeded_shuffle(rows, self.buffer, (self.seed, self.rank, epoch))


def seeded_shuffle(rows: Iterable[T], buffer: int, key: tuple[int, ...]) -> Iterator[T]:
    """`rows` in a random order drawn from `key` alone: fill a buffer, then for each further row
    emit a random buffered one and keep the new row in its place; at the end emit the rest
    in a random order."""
    if buffer < 2:
        yield from rows
        return
    rng = np.random.default_rng(np.random.SeedSequence([abs(int(k)) for k in key]))
    held: list[T] = []
    for row in rows:
        if len(held) < buffer:
            held.append(row)
            continue
        k = int(rng.integers(buffer))
        yield held[k]
        held[k] = row
    for k in rng.permutation(len(held)):
        yield held[k]
