"""Steps from a stream: modality grouping, and resuming without repeating or skipping samples."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pyarrow as pa
import pytest

from vlmsweep.data.batching import StepAssembler, modality
from vlmsweep.data.order import StreamOrder
from vlmsweep.data.packing import pack
from vlmsweep.data.stream import PREPARED_SCHEMA, PrepSpec, StreamState, iter_samples

SHAPE = (3, 2, 2)
SPEC = PrepSpec(vision={}, llm={}, work="", template="vicuna", image_tokens=1, image_shape=SHAPE,
                max_length=64, overlong="truncate")


def _row(i: int, images: int, skip: str = "") -> dict:
    n = 3 + i % 5
    return {"id": f"s{i}", "input_ids": list(range(n)), "labels": list(range(n)),
            "pixels": [0.0] * (images * int(np.prod(SHAPE))), "num_images": images,
            "skip_reason": skip, "skip_detail": "", "truncated": i % 7 == 0}


class FakeShard:
    """What ray.train.get_dataset_shard returns, reduced to iter_batches over fixed rows."""

    def __init__(self, rows: list[dict], batch: int = 4):
        self.table = pa.Table.from_pylist(rows, schema=PREPARED_SCHEMA)
        self.batch = batch

    def iter_batches(self, **_):
        for start in range(0, self.table.num_rows, self.batch):
            yield self.table.slice(start, self.batch)


def mixed_rows(n: int = 30) -> list[dict]:
    # images on 2 of every 3 rows; every 9th row can't be used (a skip reason)
    return [_row(i, images=0 if i % 3 == 0 else 1 + i % 2, skip="unreadable_image" if i % 9 == 4 else "")
            for i in range(n)]


def run_steps(rows, state: StreamState, n_steps: int, packing: bool, micro=2, accum=2, order=None):
    stream = iter_samples(FakeShard(rows), SPEC, state, order)
    assembler = StepAssembler(pack(stream, 16, 4, packing), micro, accum, group_by_modality=not packing)
    trained, kinds = [], []
    for _ in range(n_steps):
        step = assembler.next_step()
        kinds.append(step.modality)
        trained.append([s.id for micro_rows in step.micro_batches for r in micro_rows for s in r.samples])
    return trained, kinds, assembler.position(), state


def test_unpacked_steps_are_each_one_modality_and_use_every_sample_once():
    rows = mixed_rows()
    trained, kinds, _, _ = run_steps(rows, StreamState(), n_steps=5, packing=False)
    by_id = {r["id"]: r for r in rows}
    for ids, kind in zip(trained, kinds):
        assert {("image" if by_id[i]["num_images"] else "text") for i in ids} == {kind}
    flat = [i for ids in trained for i in ids]
    assert len(flat) == len(set(flat))  # within an epoch nothing repeats
    assert set(kinds) == {"image", "text"}


def test_grouping_works_with_a_single_modality_and_accumulation():
    rows = [_row(i, images=1) for i in range(20)]
    trained, kinds, _, _ = run_steps(rows, StreamState(), n_steps=3, packing=False, micro=1, accum=3)
    assert kinds == ["image"] * 3
    assert [len(ids) for ids in trained] == [3, 3, 3]


# shuffled with a buffer smaller than the epoch, and with one holding all of it
ORDERS = [None, StreamOrder(seed=7, rank=0, buffer=8), StreamOrder(seed=7, rank=1, buffer=64)]


@pytest.mark.parametrize("order", ORDERS, ids=["as-read", "shuffled-buffer8", "shuffled-whole-epoch"])
@pytest.mark.parametrize("packing", [True, False], ids=["packed", "grouped"])
@pytest.mark.parametrize("stop_after", [1, 2, 3, 5])
@pytest.mark.parametrize("n_rows", [40, 14], ids=["one-epoch", "epochs-roll-over"])
def test_resume_neither_repeats_nor_skips_samples(packing, stop_after, order, n_rows):
    rows = mixed_rows(n_rows)
    total = 7
    clean, clean_kinds, _, clean_state = run_steps(rows, StreamState(), total, packing, order=order)

    first, _, (position, ahead), live = run_steps(rows, StreamState(), stop_after, packing, order=order)
    # what a checkpoint keeps: the state rewound to the position, plus the rows trained beyond it
    restored = StreamState.restore(live.to_dict(), position, ahead)
    rest, _, _, resumed_state = run_steps(rows, restored, total - stop_after, packing, order=order)

    assert first + rest == clean
    # skip counts are exact too: rows before the position are not counted a second time
    assert resumed_state.skip_counts() == clean_state.skip_counts()
    if n_rows == 14:
        assert clean_state.epoch >= 1, "the case meant to cross an epoch did not"


def test_the_seed_orders_the_trained_samples():
    rows = mixed_rows(40)

    def trained(order):
        return [i for ids in run_steps(rows, StreamState(), 5, packing=True, order=order)[0] for i in ids]

    same = trained(StreamOrder(seed=1, rank=0, buffer=64))
    assert trained(StreamOrder(seed=1, rank=0, buffer=64)) == same
    assert trained(StreamOrder(seed=2, rank=0, buffer=64)) != same
    assert trained(None) != same


def test_modality_of_a_row():
    rows = list(islice(pack(iter_samples(FakeShard(mixed_rows(6)), SPEC, StreamState()), 16, 4, packing=False), 3))
    assert [modality(r) for r in rows[:3]] == ["text", "image", "image"]
