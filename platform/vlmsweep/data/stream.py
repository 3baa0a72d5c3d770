"""Ray Data: shards → preprocessed samples, one deterministic stream per Train worker.

Every rank gets its own dataset (rows whose id hashes to that rank, `rank_of`) and the
trainer hands them out unsplit; each worker reads its own. Ray's default streaming split
hands blocks to whichever worker asks first, so a worker's rows would differ between
runs, and a resumed stage could not find its place. With a fixed row → rank map and
ordered execution, the stream a rank sees is the same every time.

Preprocessing (`prepare_table`): decode images, pad-to-square + the vision processor, render
the template, tokenize with label spans. A sample that can't be used keeps its row with a
`skip_reason`, so the worker counts it (by reason, with ids) instead of it vanishing inside
the pipeline.

A small split is prepared once per split and preprocessing and cached (data/prepared.py);
a large one streams through `rank_datasets`, each rank's pipeline running in its worker.

Within each epoch a rank's rows pass through a seeded shuffle buffer (data/order.py), so the
seed varies the data order and a checkpoint's stream position still names the same row.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pyarrow as pa
from PIL import Image

from vlmsweep.config.schema import LLMConfig, ModelConfig
from vlmsweep.config.workdir import WorkDir
from vlmsweep.models.llm import image_delimiters, load_tokenizer
from vlmsweep.models.vision import ImagePipeline

from .order import StreamOrder
from .packing import Sample
from .shards import ShardError, iter_shard_tables, read_manifest, shard_files
from .tokenize import SkipSample, tokenize_conversation

PREPARED_SCHEMA = pa.schema([
    ("id", pa.string()), ("input_ids", pa.list_(pa.int64())), ("labels", pa.list_(pa.int64())),
    ("pixels", pa.list_(pa.float32())), ("num_images", pa.int32()), ("skip_reason", pa.string()),
    ("skip_detail", pa.string()), ("truncated", pa.bool_()),
])


@dataclass(frozen=True)
class PrepSpec:
    """Everything a preprocessing task needs; small and picklable."""

    vision: dict | list     # model.vision as JSON: one encoder's config, or fused encoders' list
    llm: dict
    work: str               # the work dir URI: each task finds the models on its own node through it
    template: str
    image_tokens: int
    image_shape: tuple[int, int, int]
    max_length: int
    overlong: str


@dataclass(frozen=True)
class PrepTools:
    tokenizer: object
    images: ImagePipeline
    delimiters: tuple[int, int] | None


def prep_tools(spec: PrepSpec) -> PrepTools:
    """The tokenizer and image pipeline of `spec`, loaded once per process (keyed by their JSON)."""
    return _tools(json.dumps(spec.vision, sort_keys=True), json.dumps(spec.llm, sort_keys=True), spec.work)


@lru_cache(maxsize=4)
def _tools(vision_json: str, llm_json: str, work_uri: str) -> PrepTools:
    # loaded once per Ray worker process, reused by every batch it preprocesses
    vision = ModelConfig.model_validate({"vision": json.loads(vision_json)}).vision
    llm = LLMConfig.model_validate_json(llm_json)
    model_root = WorkDir(work_uri).model_root()
    tokenizer = load_tokenizer(llm, model_root)
    return PrepTools(tokenizer, ImagePipeline.load(vision, model_root), image_delimiters(tokenizer, llm))


def prepare_row(row: dict, spec: PrepSpec, tools: PrepTools) -> dict:
    out = {"id": row["id"], "input_ids": [], "labels": [], "pixels": [], "num_images": 0,
           "skip_reason": "", "skip_detail": "", "truncated": False}
    try:
        images = []
        for k, data in enumerate(row["images"] or []):
            try:
                images.append(Image.open(io.BytesIO(data)).convert("RGB"))
            except Exception as err:  # any decoder error means the same thing: unusable image
                raise SkipSample("unreadable_image", f"image {k}: {err}") from None
        tok = tokenize_conversation(tools.tokenizer, spec.template, list(row["conversations"]), len(images),
                                    spec.image_tokens, spec.max_length, spec.overlong, tools.delimiters)
        if images:
            pixels = tools.images(images)
            if pixels.shape[1:] != spec.image_shape:
                raise SkipSample("bad_image_shape", f"{pixels.shape[1:]} != {spec.image_shape}")
            out["pixels"] = pixels.ravel()
        out.update(input_ids=tok.input_ids, labels=tok.labels, num_images=len(images), truncated=tok.truncated)
    except SkipSample as skip:
        out.update(skip_reason=skip.reason, skip_detail=skip.detail)
    return out


def prepare_table(table: pa.Table, spec: PrepSpec) -> pa.Table:
    tools = prep_tools(spec)
    rows = [prepare_row(r, spec, tools) for r in table.to_pylist()]
    # columns straight from numpy: converting pixel arrays element by element would cost
    # more than the preprocessing itself
    columns = {name: [r[name] for r in rows] for name in PREPARED_SCHEMA.names}
    for name in ("input_ids", "labels", "pixels"):
        columns[name] = _list_array(columns[name], PREPARED_SCHEMA.field(name).type.value_type)
    return pa.table(columns, schema=PREPARED_SCHEMA)


def _list_array(arrays: list, value_type: pa.DataType) -> pa.ListArray:
    values = [np.asarray(a, dtype=value_type.to_pandas_dtype()).ravel() for a in arrays]
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    flat = np.concatenate(values) if values else np.zeros(0, dtype=value_type.to_pandas_dtype())
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=value_type))


def _list_column(batch: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(flat numpy values, offsets) of a list column, without Python objects per element."""
    column = batch.column(name).combine_chunks()
    offsets = column.offsets.to_numpy()
    return column.values.to_numpy(zero_copy_only=False), offsets - offsets[0]


def rank_of(sample_id: str, world: int) -> int:
    """A stable row → rank map (crc32 of the id), independent of shard layout and run."""
    return zlib.crc32(sample_id.encode()) % world


def keep_rank(table: pa.Table, rank: int, world: int) -> pa.Table:
    mask = [rank_of(i, world) == rank for i in table.column("id").to_pylist()]
    return table.filter(pa.array(mask, type=pa.bool_()))


# Below this many shard bytes, a stage's prepared data is materialized once in the object
# store: a small dataset is read for many epochs, and re-running decode + tokenize for each
# one costs more than the training steps (Ray Data re-executes a lazy dataset per epoch).
MATERIALIZE_BELOW_BYTES = 64 << 20
_COLUMNS = ["id", "images", "conversations"]   # what preprocessing reads of a shard row


def _select_and_prepare(ds, spec: PrepSpec, world: int = 1, rank: int = 0, mix=None):
    ds = ds.select_columns(_COLUMNS)
    if world > 1:
        ds = ds.map_batches(keep_rank, fn_kwargs={"rank": rank, "world": world}, batch_format="pyarrow",
                            zero_copy_batch=True)
    ds = ds.map_batches(prepare_table, fn_kwargs={"spec": spec}, batch_format="pyarrow", batch_size=32)
    # after preparing, as on the prepared path: a skipped row is counted whatever its kind
    return ds.map_batches(mix.apply, batch_format="pyarrow") if mix is not None else ds


def _read_shards(batch: pa.Table) -> Iterator[pa.Table]:
    for uri in batch.column("file").to_pylist():
        yield from iter_shard_tables(uri, _COLUMNS)


def shard_rows(files: list[str]):
    """A Ray dataset of the shards' rows (the columns preprocessing reads), in file order.

    Not `ray.data.read_parquet`: it retries a read that fails (ten times) and then surfaces a
    SystemException that doesn't name the file, while a corrupt shard must fail its stage at
    once, with the shard's name as the reason (shards.ShardError)."""
    import ray.data

    _ordered()
    return ray.data.from_items([{"file": f} for f in files]).map_batches(
        _read_shards, batch_size=1, batch_format="pyarrow")


def _ordered() -> None:
    import ray.data

    ray.data.DataContext.get_current().execution_options.preserve_order = True


def rank_datasets(shard_dir: str, world: int, spec: PrepSpec, prefix: str = "train",
                  materialize: bool | None = None, mix=None) -> dict:
    """One Ray dataset per rank (read → the rank's rows → prepare), named f"{prefix}_rank{r}", in a
    fixed order: the streaming path, for splits too large to prepare once and hold (stage_datasets).
    Lazy, each runs in its own worker; materialized here instead when `materialize`, which by
    default is whether the shards are under MATERIALIZE_BELOW_BYTES."""

    _ordered()
    files = shard_files(shard_dir)
    if materialize is None:
        materialize = sum(s["bytes"] for s in read_manifest(shard_dir)["shards"]) < MATERIALIZE_BELOW_BYTES
    out = {}
    for rank in range(world):
        ds = _select_and_prepare(shard_rows(files), spec, world, rank, mix)
        out[f"{prefix}_rank{rank}"] = ds.materialize() if materialize else ds
    return out


@dataclass
class StreamState:
    """Where a rank is in its stream: saved in every checkpoint, restored on resume.

    Skips and truncations are recorded (first epoch only: later epochs see the same rows)
    with the stream index where they happened, so restoring to a position can drop the
    ones that lie beyond it: they will be met, and counted, again.
    """

    epoch: int = 0
    index: int = 0          # rows of this epoch already passed (used or skipped)
    passed: int = 0         # rows passed since the stage began, over all epochs
    skipped: dict = field(default_factory=dict)   # reason -> [[index, id], ...]
    truncated: list = field(default_factory=list)  # indices of truncated samples
    # rows beyond the position that were already trained on (modality grouping takes rows
    # out of order): a resumed stream passes over them
    consumed_ahead: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "passed": self.passed,
                "skipped": self.skipped, "truncated": self.truncated}

    @classmethod
    def restore(cls, saved: dict, position: tuple[int, int, int], consumed_ahead: list | None = None) -> StreamState:
        """The saved state rewound to `position` = (epoch, index, passed) of the last trained row."""
        epoch, index, passed = position
        limit = index if epoch == 0 else float("inf")
        skipped = {r: [e for e in entries if e[0] <= limit] for r, entries in saved["skipped"].items()}
        return cls(epoch, index, passed, {r: e for r, e in skipped.items() if e},
                   [i for i in saved["truncated"] if i <= limit], [list(p) for p in consumed_ahead or []])

    def skip_counts(self) -> dict[str, int]:
        return {reason: len(entries) for reason, entries in sorted(self.skipped.items())}


def iter_samples(iterator, spec: PrepSpec, state: StreamState, order: StreamOrder | None = None) -> Iterator[Sample]:
    """Endless samples, epoch after epoch, continuing from `state` (which is updated in place).

    Each epoch's rows come in `order` (a seeded shuffle; as read when None). Positions count
    rows in that order, and rows up to the state's position are passed over without
    counting again, so a resumed stage sees exactly the samples the interrupted one had not
    trained on yet.
    """
    resume_epoch, resume_index = state.epoch, state.index
    ahead = {tuple(p) for p in state.consumed_ahead}
    epoch = resume_epoch
    while True:
        index = 0
        rows = (row for batch in _batches(iterator) for row in _rows(batch, spec))
        for sample, skip in (order.epoch(rows, epoch) if order else rows):
            index += 1
            if (epoch, index) <= (resume_epoch, resume_index):
                continue
            state.epoch, state.index, state.passed = epoch, index, state.passed + 1
            if (epoch, index) in ahead:  # trained on before the interruption
                continue
            if sample is None:
                if epoch == 0:
                    reason, sample_id = skip
                    state.skipped.setdefault(reason, []).append([index, sample_id])
                continue
            if skip and epoch == 0:  # a usable but truncated sample
                state.truncated.append(index)
            sample.position = (epoch, index, state.passed)
            yield sample
        if index == 0:
            raise RuntimeError("this worker's data stream is empty: too few samples for the number of workers")
        epoch += 1
        state.epoch, state.index = epoch, 0


def _batches(iterator) -> Iterator[pa.Table]:
    """The dataset's batches; a shard that can't be read ends the stream with its ShardError
    (one line naming the file), not Ray Data's wrapping of it."""
    try:
        yield from iterator.iter_batches(batch_format="pyarrow", batch_size=64, prefetch_batches=2)
    except Exception as err:
        cause = _shard_error(err)
        if cause is None:
            raise
        raise ShardError(cause) from None


def _shard_error(err: BaseException | None) -> str | None:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ShardError):
            return next((a for a in err.args if isinstance(a, str) and a.startswith("shard ")), str(err))
        err = err.__cause__ or err.__context__ or getattr(err, "cause", None)
    return None


def _rows(batch: pa.Table, spec: PrepSpec):
    """(Sample, truncated) for usable rows, (None, (reason, id)) for skipped ones."""
    ids, reasons = batch.column("id").to_pylist(), batch.column("skip_reason").to_pylist()
    n_images, truncated = batch.column("num_images").to_pylist(), batch.column("truncated").to_pylist()
    (tok, tok_off), (lab, lab_off), (pix, pix_off) = (_list_column(batch, c) for c in ("input_ids", "labels", "pixels"))
    for i, sample_id in enumerate(ids):
        if reasons[i]:
            yield None, (reasons[i], sample_id)
            continue
        pixels = pix[pix_off[i]:pix_off[i + 1]].reshape((n_images[i], *spec.image_shape))
        yield Sample(sample_id, tok[tok_off[i]:tok_off[i + 1]].astype(np.int64),
                     lab[lab_off[i]:lab_off[i + 1]].astype(np.int64), pixels), truncated[i]
