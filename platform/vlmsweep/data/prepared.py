"""A small split's prepared rows: prepared once per (split content, preprocessing), cached in
the work dir, and handed to a stage's ranks as in-memory datasets.

A split is small (`is_small`) when its shards and its prepared rows fit the limits below.
One Ray Data execution prepares all its rows (or, for a few hundred rows, the stage's driver
does: `PREPARE_HERE_BELOW_ROWS`); they are cached in the work dir (`prepared/<key>/`), split
by rank in the stage's driver and put in the object store as each rank's dataset. Later
stages and variants that read the same split with the same preprocessing load the cached
rows and start no Ray Data execution at all. A large split streams instead: each rank's
own lazy pipeline (data/stream.py `rank_datasets`) runs inside its worker, epoch after epoch.
Either way a rank's rows and their order are the same (the crc32 row → rank map, in shard order).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlmsweep import storage

from . import stream
from .mix import MixCounts, TextOnlyMix
from .shards import iter_shard_tables, read_manifest, shard_files
from .stream import (
    _COLUMNS,
    PREPARED_SCHEMA,
    PrepSpec,
    _ordered,
    _select_and_prepare,
    prepare_table,
    rank_of,
)
from .tokenize import LABELS_VERSION

# A split's prepared rows hold float32 pixels, 10-100x the encoded images (a 336 px image is
# 1.35 MB prepared), and the stage's driver holds them once: above this they stream instead.
PREPARED_BELOW_BYTES = 1 << 30

# ------------------------------------------------------------------ prepared rows, once per split

# The prepared rows of a small split are cached in the work dir, keyed by what determines
# them: the split's content hash, the preprocessing (PrepSpec without the work dir's
# location), the label rules (LABELS_VERSION), the content keys of zoo checkpoints whose
# tokenizer / image processor is used (`identity`), and PREPARED_VERSION. Bump it whenever
# prepare_row / prepare_table or PREPARED_SCHEMA change what they produce.
#
# Why in the work dir, through vlmsweep.storage, and not on a node's disk: the stages that
# read the same split with the same preprocessing (every variant's finetune on the same
# vision tower and LLM, base and share pretrains, a resumed or retried stage) run on any
# node of the cluster, and the work dir (local, NFS, s3://, gs://) is the one place every
# node reaches. An entry is written once and never changed: the rows go to a file with a
# unique name, the manifest naming it last, so a reader sees a whole entry or none, and two
# stages preparing the same entry at once each write a complete one (the same rows).
PREPARED_VERSION = 1
PREPARED_DIR = "prepared"
PREPARED_MANIFEST = "manifest.json"
_BLOCK_ROWS = 256       # rows per parquet row group, and per block handed to Ray Data


def is_small(manifest: dict, spec: PrepSpec) -> bool:
    """Whether a split is prepared once and held (else: streamed, prepared per rank in its worker)."""
    shard_bytes = sum(s.get("bytes", 0) for s in manifest["shards"])
    modalities = manifest.get("modalities") or {"image": manifest["rows"]}
    images = modalities.get("image", 0) + 4 * modalities.get("multi_image", 0)  # multi-image rows: a bound
    prepared = images * 4 * int(np.prod(spec.image_shape)) + shard_bytes
    return shard_bytes < stream.MATERIALIZE_BELOW_BYTES and prepared < PREPARED_BELOW_BYTES


def prepared_key(split_hash: str, spec: PrepSpec, identity: dict | None = None) -> str:
    spec_fields = {k: v for k, v in asdict(spec).items() if k != "work"}  # where, not what
    payload = {"version": PREPARED_VERSION, "labels": LABELS_VERSION, "split": split_hash, "prep": spec_fields,
               "identity": identity or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:20]


def prepared_entry(manifest: dict, spec: PrepSpec, identity: dict | None = None) -> str:
    """The cache location of a split's prepared rows (in the work dir `spec.work`); `manifest` is
    the split's shard manifest."""
    return storage.join(spec.work, PREPARED_DIR, prepared_key(manifest["content_hash"], spec, identity))


def read_prepared(entry: str) -> pa.Table | None:
    """The cached rows of an entry, or None when there is no whole entry (not written yet, or
    written by another PREPARED_VERSION)."""
    try:
        manifest = json.loads(storage.read_text(storage.join(entry, PREPARED_MANIFEST)))
    except FileNotFoundError:
        return None
    if manifest.get("version") != PREPARED_VERSION:
        return None
    fs, path = storage.filesystem(storage.join(entry, manifest["file"]))
    try:
        table = pq.read_table(path, filesystem=fs)
    except FileNotFoundError:
        return None
    if table.num_rows != manifest["rows"] or table.schema.names != PREPARED_SCHEMA.names:
        return None
    return table.cast(PREPARED_SCHEMA)


def write_prepared(entry: str, table: pa.Table, about: dict | None = None) -> None:
    """Write an entry: the rows under a unique name, then the manifest that names them."""
    name = f"rows-{uuid.uuid4().hex[:12]}.parquet"
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, row_group_size=_BLOCK_ROWS)
    storage.write_bytes(storage.join(entry, name), buf.getvalue().to_pybytes())
    storage.write_text(storage.join(entry, PREPARED_MANIFEST), json.dumps(
        {"version": PREPARED_VERSION, "file": name, "rows": table.num_rows, **(about or {})}, indent=1))


# Below this many rows, a split is prepared in the stage's driver process instead of by a Ray
# Data execution. An execution costs ~3 s before its first row on a warm 2-CPU cluster, and
# ~7 s when its task workers have to start and import transformers first, while a smoke
# split (256-384 rows) takes 0.2-0.4 s here, with the tokenizer and processor this process
# has loaded already. It is the same function (prepare_table) over the same rows in the same
# order, so the prepared rows are identical either way. Above it, Ray Data spreads the work
# over the cluster's CPUs.
PREPARE_HERE_BELOW_ROWS = 1024


def prepare_split(shard_dir: str, spec: PrepSpec) -> pa.Table:
    """Every row of a split, prepared, in stream order, for all ranks at once: here for a few
    rows (PREPARE_HERE_BELOW_ROWS), else in one Ray Data execution."""
    files = shard_files(shard_dir)
    if read_manifest(shard_dir)["rows"] < PREPARE_HERE_BELOW_ROWS:
        tables = [prepare_table(t, spec) for uri in files for t in iter_shard_tables(uri, _COLUMNS, batch_size=32)]
    else:
        import ray
        import ray.data

        _ordered()
        ds = _select_and_prepare(stream.shard_rows(files), spec)
        tables = ray.get(ds.to_arrow_refs())
    tables = [t.cast(PREPARED_SCHEMA) for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else PREPARED_SCHEMA.empty_table()


def split_by_rank(table: pa.Table, world: int) -> list[pa.Table]:
    """The rows of each rank, in stream order (the same rows `keep_rank` keeps)."""
    ranks = np.fromiter((rank_of(i, world) for i in table.column("id").to_pylist()), dtype=np.int64,
                        count=table.num_rows)
    return [table.filter(pa.array(ranks == r)) for r in range(world)]


def _dataset_of(table: pa.Table):
    """A Ray dataset over rows this process already holds: put in the object store as blocks,
    with no execution (read_parquet + materialize would cost a Ray Data execution, seconds)."""
    import ray.data

    _ordered()   # the worker iterates it: blocks must come in this order, every run
    blocks = [table.slice(k, _BLOCK_ROWS) for k in range(0, table.num_rows, _BLOCK_ROWS)] or [table]
    return ray.data.from_arrow(blocks)


@dataclass
class StageData:
    """What a training stage's workers read: `datasets` for TorchTrainer(datasets=...), one per
    rank, named f"{prefix}_rank{r}"; where the prepared rows are cached and whether they were
    found there (None: a streamed split, prepared on the fly)."""

    datasets: dict
    prepared: str | None = None
    cache_hit: bool = False
    mix_counts: dict | None = None     # what a text-only mix kept (MixCounts; prepared splits)
    rows: int | None = None            # rows in the datasets, where known (prepared splits)

    @property
    def how(self) -> str:
        return "streamed" if self.prepared is None else "cached" if self.cache_hit else "prepared and cached"


def stage_datasets(shard_dir: str, world: int, spec: PrepSpec, prefix: str = "train",
                   identity: dict | None = None, mix: TextOnlyMix | None = None) -> StageData:
    """Per-rank datasets of a split for one stage: a small split's rows are prepared once (or found
    in the cache) and split by rank here; a large one streams (`rank_datasets`). `mix` thins the
    rows to a text-only share after preparation (the cache holds the whole split)."""
    manifest = read_manifest(shard_dir)
    if not is_small(manifest, spec):
        return StageData(stream.rank_datasets(shard_dir, world, spec, prefix, materialize=False, mix=mix))
    entry = prepared_entry(manifest, spec, identity)
    table = read_prepared(entry)
    hit = table is not None
    if not hit:
        table = prepare_split(shard_dir, spec)
        write_prepared(entry, table, {"split": manifest["content_hash"], "shard_dir": storage.normalize(shard_dir)})
    counts = None
    if mix is not None:
        counts = MixCounts.of(table, mix).to_dict()
        table = mix.apply(table)
    ranks = split_by_rank(table, world)
    return StageData({f"{prefix}_rank{r}": _dataset_of(t) for r, t in enumerate(ranks)}, entry, hit, counts,
                     table.num_rows)
