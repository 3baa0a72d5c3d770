"""Rows → optimizer steps, and the data position a checkpoint must remember.

Packed mode takes rows in stream order. Unpacked mode keeps LLaVA-1.5's modality-grouped
batches: every step is all image samples or all text-only samples (LLaVA reports ~25%
faster training: no step pays for a vision pass that half its samples don't use). Ranks
agree on each step's modality through `agree`, so one global step is one modality.

Grouping takes rows out of stream order, so a position is a low-water mark (every row up
to it was trained on) plus the rows trained on beyond it; a resumed stream skips both.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .packing import Row

MODALITIES = ("image", "text")


def modality(row: Row) -> str:
    return "image" if row.images else "text"


@dataclass
class Step:
    micro_batches: list[list[Row]]
    modality: str | None  # None when steps aren't grouped (packed mode)


def _single_process_agree(ready: list[bool]) -> int | None:
    return next((i for i, r in enumerate(ready) if r), None)


class StepAssembler:
    """Assemble `grad_accum` micro-batches of `micro_batch` rows per step."""

    def __init__(self, rows: Iterator[Row], micro_batch: int, grad_accum: int, group_by_modality: bool,
                 agree: Callable[[list[bool]], int | None] = _single_process_agree):
        self.rows, self.micro, self.accum = rows, micro_batch, grad_accum
        self.grouped, self.agree = group_by_modality, agree
        self.buffers: dict[str, deque[Row]] = {m: deque() for m in MODALITIES}
        self.last_end: tuple[int, int, int] | None = None   # end of the last row trained on
        self.consumed_ahead: set[tuple[int, int]] = set()

    @property
    def rows_per_step(self) -> int:
        return self.micro * self.accum

    def next_step(self) -> Step:
        if not self.grouped:
            rows = [next(self.rows) for _ in range(self.rows_per_step)]
            self.last_end = rows[-1].end_position
            return Step(self._split(rows), None)
        while True:
            ready = [len(self.buffers[m]) >= self.rows_per_step for m in MODALITIES]
            if any(ready):
                choice = self.agree(ready)
                if choice is not None:
                    break
            row = next(self.rows)
            self.buffers[modality(row)].append(row)
        buffer = self.buffers[MODALITIES[choice]]
        rows = [buffer.popleft() for _ in range(self.rows_per_step)]
        for row in rows:
            for s in row.samples:
                self.consumed_ahead.add(s.position[:2])
        self._advance_low_water(rows)
        return Step(self._split(rows), MODALITIES[choice])

    def _split(self, rows: list[Row]) -> list[list[Row]]:
        return [rows[i * self.micro:(i + 1) * self.micro] for i in range(self.accum)]

    def _advance_low_water(self, rows: list[Row]) -> None:
        """Move the low-water mark up to the earliest row still waiting in a buffer."""
        waiting = [r.samples[0].position for b in self.buffers.values() for r in b]
        newest = max(r.end_position for r in rows)
        if self.last_end is not None:
            newest = max(newest, self.last_end)
        if waiting:
            first = min(waiting)
            # everything strictly before the first waiting row has been trained on
            mark = (first[0], first[1] - 1, first[2] - 1)
            self.last_end = mark if self.last_end is None or mark > self.last_end else self.last_end
        else:
            self.last_end = newest
        self.consumed_ahead = {p for p in self.consumed_ahead if p > self.last_end[:2]}

    def position(self) -> tuple[tuple[int, int, int] | None, list[list[int]]]:
        """(low-water mark, rows trained on beyond it): what a checkpoint stores."""
        return self.last_end, sorted([list(p) for p in self.consumed_ahead])
