"""The one shard format every dataset in vlmsweep is written in and read from.

A shard dir holds `shard-00000.parquet`, ... (one row per sample, `SHARD_SCHEMA`) and a
`manifest.json` that is written last: a dir without a manifest is an unfinished write and
is never read. Readers take the file list from the manifest, never from a glob, so stray
files (an old run's shards, temp files) can't leak into training.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vlmsweep import storage

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
# Same marker as vlmsweep.IMAGE_MARKER; repeated here because data/ only imports config.
IMAGE_MARKER = "<image>"
ROLES = ("system", "user", "assistant")
MODALITIES = ("text", "image", "multi_image")
FIELDS = ("id", "images", "conversations", "source", "modality")

SHARD_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("images", pa.list_(pa.binary()), nullable=False),
    pa.field("conversations", pa.list_(pa.struct([
        pa.field("role", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ])), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
])

# Row groups small enough that a streaming reader never holds a whole shard of images.
_ROW_GROUP = 256
# Per-row overhead beyond payload bytes, so byte-bounded shards stay honest for tiny rows.
_ROW_OVERHEAD = 64


def _bad(sample_id: object, field: str, msg: str) -> ValueError:
    return ValueError(f"malformed sample id={sample_id!r}: field {field!r}: {msg}")


def _expected_modality(n_images: int) -> str:
    return "text" if n_images == 0 else "image" if n_images == 1 else "multi_image"


def validate_sample(sample: dict) -> dict:
    """Check one sample against the schema's rules and return it normalised (plain types).

    Raises ValueError naming the sample id and the offending field.
    """
    if not isinstance(sample, dict):
        raise ValueError(f"malformed sample: expected a dict, got {type(sample).__name__}")
    sid = sample.get("id")
    missing = [f for f in FIELDS if f not in sample]
    if missing:
        raise _bad(sid, missing[0], "missing")
    extra = sorted(set(sample) - set(FIELDS))
    if extra:
        raise _bad(sid, extra[0], f"unknown field (allowed: {', '.join(FIELDS)})")
    if not isinstance(sid, str) or not sid:
        raise _bad(sid, "id", "must be a non-empty string")
    for field in ("source", "modality"):
        if not isinstance(sample[field], str) or not sample[field]:
            raise _bad(sid, field, "must be a non-empty string")

    images = sample["images"]
    if not isinstance(images, (list, tuple)):
        raise _bad(sid, "images", f"must be a list of bytes, got {type(images).__name__}")
    imgs = []
    for i, img in enumerate(images):
        if not isinstance(img, (bytes, bytearray, memoryview)) or len(img) == 0:
            raise _bad(sid, f"images[{i}]", "must be non-empty encoded image bytes")
        imgs.append(bytes(img))

    convs = sample["conversations"]
    if not isinstance(convs, (list, tuple)) or not convs:
        raise _bad(sid, "conversations", "must be a non-empty list of {role, text}")
    turns, markers = [], 0
    for i, turn in enumerate(convs):
        if not isinstance(turn, dict) or set(turn) != {"role", "text"}:
            raise _bad(sid, f"conversations[{i}]", "must be a dict with exactly 'role' and 'text'")
        role, text = turn["role"], turn["text"]
        if role not in ROLES:
            raise _bad(sid, f"conversations[{i}].role", f"{role!r} not one of {', '.join(ROLES)}")
        if not isinstance(text, str):
            raise _bad(sid, f"conversations[{i}].text", "must be a string")
        n = text.count(IMAGE_MARKER)
        if n and role != "user":
            raise _bad(sid, f"conversations[{i}].text", f"{IMAGE_MARKER} may only appear in user turns")
        markers += n
        turns.append({"role": role, "text": text})
    # Chat templates need: optional system first, then user/assistant alternating, ending
    # on an assistant turn (the thing the loss is computed on).
    body = turns[1:] if turns[0]["role"] == "system" else turns
    for i, turn in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if turn["role"] != want:
            idx = i + (len(turns) - len(body))
            raise _bad(sid, f"conversations[{idx}].role", f"expected {want!r} (optional system, "
                       "then user/assistant alternating)")
    if not body or body[-1]["role"] != "assistant":
        raise _bad(sid, "conversations", "must end with an assistant turn")
    if markers != len(imgs):
        raise _bad(sid, "images", f"{len(imgs)} image(s) but {markers} {IMAGE_MARKER} marker(s) "
                   "in user turns")
    modality = sample["modality"]
    if modality not in MODALITIES:
        raise _bad(sid, "modality", f"{modality!r} not one of {', '.join(MODALITIES)}")
    if modality != _expected_modality(len(imgs)):
        raise _bad(sid, "modality", f"{modality!r} but the sample has {len(imgs)} image(s) "
                   f"(expected {_expected_modality(len(imgs))!r})")
    return {"id": sid, "images": imgs, "conversations": turns,
            "source": sample["source"], "modality": modality}


def _hash_row(h: "hashlib._Hash", row: dict) -> None:
    # Length-prefixed pieces so no two different rows can feed the hash the same bytes.
    meta = json.dumps({k: row[k] for k in ("id", "conversations", "source", "modality")}
                      | {"n_images": len(row["images"])},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    for piece in (meta, *row["images"]):
        h.update(len(piece).to_bytes(8, "big"))
        h.update(piece)


def _approx_bytes(row: dict) -> int:
    return (_ROW_OVERHEAD + len(row["id"]) + sum(map(len, row["images"]))
            + sum(len(t["text"]) + 16 for t in row["conversations"]))


class ShardWriter:
    """Incremental writer behind `write_shards`; lets one producer feed several dirs at once.

    Use: `w = ShardWriter(dir); w.add(sample) ...; manifest = w.close(extra)`.
    """

    def __init__(self, out_dir: str | Path, *, max_rows_per_shard: int = 2048,
                 max_bytes_per_shard: int = 256 << 20):
        if max_rows_per_shard < 1:
            raise ValueError(f"max_rows_per_shard must be >= 1, got {max_rows_per_shard}")
        if max_bytes_per_shard < 1:
            raise ValueError(f"max_bytes_per_shard must be >= 1, got {max_bytes_per_shard}")
        self.out_dir = Path(out_dir)
        self.max_rows, self.max_bytes = max_rows_per_shard, max_bytes_per_shard
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # The old manifest goes first: a crash from here on leaves a dir that reads as
        # unfinished rather than an old manifest describing a mix of old and new shards.
        for stale in [self.out_dir / MANIFEST, *self.out_dir.glob("shard-*.parquet"),
                      *self.out_dir.glob(".*.tmp-*")]:
            stale.unlink(missing_ok=True)
        self._buf: list[dict] = []
        self._buf_bytes = 0
        self._shards: list[dict] = []
        self._ids: set[str] = set()
        self._modalities: Counter = Counter()
        self._hash = hashlib.sha256()
        self._rows = 0
        self._closed = False

    def add(self, sample: dict) -> None:
        if self._closed:
            raise RuntimeError(f"ShardWriter for {self.out_dir} is already closed")
        row = validate_sample(sample)
        if row["id"] in self._ids:
            raise _bad(row["id"], "id", f"duplicate id in {self.out_dir}")
        self._ids.add(row["id"])
        size = _approx_bytes(row)
        # Flush before a row that would overflow the byte bound (a lone oversize row still
        # gets a shard of its own).
        if self._buf and self._buf_bytes + size > self.max_bytes:
            self._flush()
        self._buf.append(row)
        self._buf_bytes += size
        _hash_row(self._hash, row)
        self._modalities[row["modality"]] += 1
        self._rows += 1
        if len(self._buf) >= self.max_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        name = f"shard-{len(self._shards):05d}.parquet"
        final = self.out_dir / name
        tmp = self.out_dir / f".{name}.tmp-{os.getpid()}"
        table = pa.Table.from_pylist(self._buf, schema=SHARD_SCHEMA)
        pq.write_table(table, tmp, compression="zstd", row_group_size=_ROW_GROUP)
        os.replace(tmp, final)  # atomic: a shard file is either whole or absent
        self._shards.append({"file": name, "rows": len(self._buf), "bytes": final.stat().st_size})
        self._buf, self._buf_bytes = [], 0

    def close(self, extra_manifest: dict | None = None) -> dict:
        self._flush()
        self._closed = True
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "rows": self._rows,
            "shards": self._shards,
            "content_hash": self._hash.hexdigest(),
            "modalities": dict(sorted(self._modalities.items())),
        }
        clash = set(manifest) & set(extra_manifest or {})
        if clash:
            raise ValueError(f"extra_manifest may not override {sorted(clash)}")
        manifest.update(extra_manifest or {})
        tmp = self.out_dir / f".{MANIFEST}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, self.out_dir / MANIFEST)
        return manifest


def write_shards(samples: Iterable[dict], out_dir: str | Path, *, max_rows_per_shard: int = 2048,
                 max_bytes_per_shard: int = 256 << 20, extra_manifest: dict | None = None) -> dict:
    """Write samples as parquet shards + manifest.json under out_dir; return the manifest.

    Same samples in the same order give byte-identical files and the same content_hash.
    """
    writer = ShardWriter(out_dir, max_rows_per_shard=max_rows_per_shard,
                         max_bytes_per_shard=max_bytes_per_shard)
    for sample in samples:
        writer.add(sample)
    return writer.close(extra_manifest)


def read_manifest(shard_dir: str | Path) -> dict:
    """The manifest of a finished shard dir (a path or URI); FileNotFoundError/ValueError naming it."""
    d = str(shard_dir)
    path = storage.join(d, MANIFEST)
    try:
        text = storage.read_text(path)
    except FileNotFoundError:
        if not storage.is_dir(d):
            raise FileNotFoundError(f"shard dir {d!r} does not exist or is not a directory") from None
        raise FileNotFoundError(f"{d!r} is not a shard dir (or its write never finished): "
                                f"no {MANIFEST} at {path!r}") from None
    except IsADirectoryError:
        raise FileNotFoundError(f"{d!r} is not a shard dir: {path!r} is a directory") from None
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path!r} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path!r}: expected a JSON object")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path!r}: schema_version {manifest.get('schema_version')!r}, "
                         f"this reader understands {SCHEMA_VERSION}")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(
            isinstance(s, dict) and isinstance(s.get("file"), str) and isinstance(s.get("rows"), int)
            for s in shards):
        raise ValueError(f"{path!r}: 'shards' must be a list of {{file, rows, bytes}}")
    if manifest.get("rows") != sum(s["rows"] for s in shards):
        raise ValueError(f"{path!r}: 'rows' {manifest.get('rows')!r} != sum of shard rows")
    return manifest


def shard_files(shard_dir: str | Path) -> list[str]:
    """Sorted locations (absolute paths or URIs) of the shards the manifest lists (each must exist)."""
    d = storage.normalize(shard_dir)
    paths = sorted(storage.join(d, s["file"]) for s in read_manifest(d)["shards"])
    for p in paths:
        if not storage.is_file(p):
            raise FileNotFoundError(f"shard {p!r} listed in {storage.join(d, MANIFEST)!r} is missing")
    return paths


class ShardError(Exception):
    """A shard that can't be read (corrupt, truncated, gone mid-stage); the message names it."""


def iter_shard_tables(uri: str, columns: list[str] | None = None, batch_size: int = 256) -> Iterator[pa.Table]:
    """A shard's rows in order, as tables of up to `batch_size` rows. Any failure to read it is a
    ShardError naming the file: a decoder's own message ("ZSTD decompression failed") doesn't say
    which of a split's shards is bad."""
    fs, path = storage.filesystem(uri)
    try:
        with fs.open_input_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns):
                yield pa.Table.from_batches([batch])
    except (OSError, pa.ArrowException) as err:
        raise ShardError(f"shard {uri} is unreadable: {err}") from None


def iter_samples(shard_dir: str | Path) -> Iterator[dict]:
    """Every sample in manifest order as plain dicts (for tools and tests, not training)."""
    for path in shard_files(shard_dir):
        fs, inner = storage.filesystem(path)
        pf = pq.ParquetFile(fs.open_input_file(inner))
        for batch in pf.iter_batches(batch_size=_ROW_GROUP):
            yield from batch.to_pylist()
