"""Ingest LLaVA-format conversation data (JSON list or JSONL + an image folder) as shards.

Each record is `{"id", "image": "rel.jpg" | ["a.jpg", "b.jpg"] | absent, "conversations":
[{"from": "human"|"gpt"|"user"|"assistant"|"system", "value"}]}`, image paths relative to
the image folder. A record the shard format can't hold is skipped, counted by kind and
reported with its id (`SKIP_KINDS`); only a malformed file, a missing image folder or a bad
option is fatal (`IngestError`, raised before anything on disk is touched).

Images are embedded as their original encoded bytes after PIL has decoded them. Each is read
only if its path, symlinks resolved, stays inside the image folder, it is a regular file of
at most `max_image_bytes`, and its header says at most `max_image_pixels` (`images.py`). The
sample's source is the `source` argument if given, else the record's own "source" string
if it has one (what `world/llava_json.py` writes, so an export round-trips exactly), else
"llava/<json file stem>".
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from .images import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    IMAGE_SKIP_KINDS,
    Skip,
    confined_path,
    decode_problem,
    read_confined,
)
from .shards import IMAGE_MARKER, ShardWriter, _expected_modality, validate_sample

ROLE_MAP = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
            "system": "system"}
SKIP_KINDS = IMAGE_SKIP_KINDS + ("image_count_mismatch", "no_assistant_turn", "empty_text",
                                 "unknown_role", "duplicate_id", "bad_structure")
SKIPPED_JSON = "skipped.json"


class IngestError(ValueError):
    """The input as a whole can't be used (malformed file, missing image folder, bad option)."""


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def read_records(json_path: str | Path) -> tuple[list, bytes]:
    """(records, raw file bytes). JSONL if the extension says so (.jsonl/.ndjson) or the
    first non-empty line is a whole JSON object and more lines follow; else a JSON list.
    IngestError naming the file and the position for anything malformed."""
    path = Path(json_path)
    if not path.is_file():
        raise IngestError(f"{str(path)!r}: no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line, col = _line_col(raw[: e.start].decode("utf-8", "replace"), e.start)
        raise IngestError(f"{path}:{line}:{col}: not valid UTF-8 ({e.reason})") from None
    lines = text.splitlines()
    nonempty = [ln for ln in lines if ln.strip()]
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    if not jsonl and len(nonempty) > 1 and nonempty[0].lstrip().startswith("{"):
        try:
            jsonl = isinstance(json.loads(nonempty[0]), dict)
        except json.JSONDecodeError:
            pass
    if jsonl:
        records = []
        for n, ln in enumerate(lines, 1):
            if not ln.strip():
                continue
            try:
                obj = json.loads(ln)
            except json.JSONDecodeError as e:
                raise IngestError(f"{path}:{n}:{e.colno}: line {n} is not valid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise IngestError(f"{path}:{n}: line {n} is a JSON {type(obj).__name__}, expected "
                                  "an object (JSONL: one sample object per line)")
            records.append(obj)
        return records, raw
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise IngestError(f"{path}:{e.lineno}:{e.colno}: invalid JSON at line {e.lineno} "
                          f"column {e.colno}: {e.msg}") from None
    if not isinstance(obj, list):
        start = len(text) - len(text.lstrip())
        line, col = _line_col(text, start)
        raise IngestError(f"{path}:{line}:{col}: top level is a JSON {type(obj).__name__}, expected "
                          "a list of samples (or JSONL: one object per line)")
    return obj, raw


def _is_text(s: str) -> bool:
    """False for a string with lone surrogates: JSON's "\\ud800" escapes decode to them, but
    they aren't Unicode text, and writing them as UTF-8 (shards, skipped.json) would fail."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _record_id(rec: object, index: int) -> tuple[str | None, str]:
    """(the id as str or None if unusable, the label to report it by)."""
    rid = rec.get("id") if isinstance(rec, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not _is_text(str(rid)) \
            or str(rid) == "":
        return None, f"#{index}"
    return str(rid), str(rid)


def _conversation(rec: dict) -> tuple[list[dict], list[str]]:
    """Turns as {role, text} and the image paths; Skip for anything but the images."""
    convs = rec.get("conversations")
    if not isinstance(convs, list):
        raise Skip("bad_structure", f"'conversations' must be a list, got {type(convs).__name__}")
    img = rec.get("image")
    if img is None:
        paths = []
    elif isinstance(img, str) and img:
        paths = [img]
    elif isinstance(img, list) and all(isinstance(p, str) and p for p in img):
        paths = list(img)
    else:
        raise Skip("bad_structure", "'image' must be a path string or a list of path strings")
    for i, t in enumerate(convs):
        if not isinstance(t, dict) or not isinstance(t.get("from"), str) \
                or not isinstance(t.get("value"), str):
            raise Skip("bad_structure", f"conversations[{i}] must be an object with string "
                        "'from' and 'value'")
    turns = []
    for i, t in enumerate(convs):
        if t["from"] not in ROLE_MAP:
            raise Skip("unknown_role", f"conversations[{i}].from {t['from']!r} not one of "
                        f"{', '.join(ROLE_MAP)}")
        turns.append({"role": ROLE_MAP[t["from"]], "text": t["value"]})
    for i, t in enumerate(turns):
        if not t["text"].strip():
            raise Skip("empty_text", f"conversations[{i}] ({t['role']}) has empty text")
    if not any(t["role"] == "assistant" for t in turns):
        raise Skip("no_assistant_turn", "no gpt/assistant turn")
    body = turns[1:] if turns[0]["role"] == "system" else turns
    for i, t in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if t["role"] != want:
            raise Skip("bad_structure", f"conversations[{i + len(turns) - len(body)}] is "
                        f"{t['role']!r}, expected {want!r} (optional system, then user/assistant "
                        "alternating)")
    if body[-1]["role"] != "assistant":
        raise Skip("bad_structure", "conversation ends on a user turn, not an assistant turn")
    for i, t in enumerate(turns):
        if t["role"] != "user" and IMAGE_MARKER in t["text"]:
            raise Skip("bad_structure", f"conversations[{i}] ({t['role']}) contains {IMAGE_MARKER}; "
                        "only user turns may")
    markers = sum(t["text"].count(IMAGE_MARKER) for t in turns)
    if markers != len(paths):
        raise Skip("image_count_mismatch", f"{len(paths)} image(s) but {markers} {IMAGE_MARKER} "
                    "marker(s) in user turns")
    return turns, paths


def _piece(h: "hashlib._Hash", data: bytes) -> None:
    h.update(len(data).to_bytes(8, "big"))
    h.update(data)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise IngestError(f"{name} must be a positive integer, got {value!r}")
    return value


class _ImageLoader:
    """Reads samples' images within the image folder and the limits, hashing each path and
    what was read (or the skip kind, when nothing was) into the input hash. Decode verdicts
    are cached by content: datasets reuse images, and decoding is the slow part."""

    def __init__(self, images_dir: Path, in_hash: "hashlib._Hash", max_bytes: int, max_pixels: int):
        self.images_dir, self.root = images_dir, Path(os.path.realpath(images_dir))
        self.in_hash, self.max_bytes, self.max_pixels = in_hash, max_bytes, max_pixels
        self.verdicts: dict[bytes, tuple[str, str] | None] = {}

    def load(self, rel: str) -> bytes:
        shown = str(self.images_dir / rel)
        _piece(self.in_hash, rel.encode())
        try:
            data = read_confined(confined_path(self.root, rel), shown, self.max_bytes)
        except Skip as s:
            _piece(self.in_hash, b"\0" + s.kind.encode())
            raise
        _piece(self.in_hash, data)
        key = hashlib.sha256(data).digest()
        if key not in self.verdicts:
            self.verdicts[key] = decode_problem(data, self.max_pixels)
        if self.verdicts[key] is not None:
            kind, why = self.verdicts[key]
            raise Skip(kind, f"image {shown!r} {why}")
        return data


def ingest_llava(json_path: str | Path, images_dir: str | Path, out_dir: str | Path, *,
                 source: str | None = None, progress: bool = True,
                 max_rows_per_shard: int = 2048, max_bytes_per_shard: int = 256 << 20,
                 max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> dict:
    """Convert a LLaVA JSON/JSONL file + image folder into a shard dir; return its manifest.

    The manifest (and `out_dir/skipped.json`) carries `input` {path, sha256, images_dir},
    `input_hash` (the JSON bytes and every image read, in sample order), `skipped`
    {kind: count}, `skipped_ids` {kind: [ids]}, `limits` {max_image_bytes, max_image_pixels},
    `ingested`, `source` and `sources`. Of samples sharing an id the first is kept, the rest
    skipped as duplicate_id. Same input → byte-identical shards. Raises IngestError for a
    malformed file, a missing image folder or a bad option, before writing anything.
    """
    json_path, images_dir = Path(json_path), Path(images_dir)
    if not images_dir.is_dir():
        raise IngestError(f"images dir {str(images_dir)!r} does not exist or is not a directory")
    if source is not None and (not isinstance(source, str) or not source):
        raise IngestError(f"source must be a non-empty string, got {source!r}")
    limits = {"max_image_bytes": _positive_int("max_image_bytes", max_image_bytes),
              "max_image_pixels": _positive_int("max_image_pixels", max_image_pixels)}
    records, raw = read_records(json_path)
    default_source = source or f"llava/{json_path.stem}"

    in_hash = hashlib.sha256()
    _piece(in_hash, raw)
    skipped: dict[str, list[str]] = {k: [] for k in SKIP_KINDS}
    details: list[dict] = []
    first_index: dict[str, int] = {}  # id -> the sample that claimed it
    sources: Counter = Counter()
    loader = _ImageLoader(images_dir, in_hash, max_image_bytes, max_image_pixels)
    writer = ShardWriter(out_dir, max_rows_per_shard=max_rows_per_shard,
                         max_bytes_per_shard=max_bytes_per_shard)
    bar = tqdm(records, desc=f"ingest {json_path.name}", unit="sample",
               disable=not progress or not sys.stderr.isatty())
    for index, rec in enumerate(bar):
        rid, label = _record_id(rec, index)
        try:
            if not isinstance(rec, dict):
                raise Skip("bad_structure", f"sample is a JSON {type(rec).__name__}, not an object")
            if not _is_text(json.dumps(rec, ensure_ascii=False)):
                raise Skip("bad_structure", "contains a lone surrogate escape such as \\ud800: "
                           "not valid Unicode text")
            if rid is None:
                raise Skip("bad_structure", "'id' missing or not a non-empty string/int")
            if rid in first_index:
                raise Skip("duplicate_id", f"id {rid!r} already used by sample #{first_index[rid]}")
            first_index[rid] = index
            turns, paths = _conversation(rec)
            src = source or rec.get("source", default_source)
            if not isinstance(src, str) or not src:
                raise Skip("bad_structure", "'source' must be a non-empty string")
            images = [loader.load(p) for p in paths]
            sample = {"id": rid, "images": images, "conversations": turns, "source": src,
                      "modality": _expected_modality(len(images))}
            try:
                validate_sample(sample)
            except ValueError as e:  # anything the checks above didn't foresee
                raise Skip("bad_structure", str(e)) from None
        except Skip as s:
            skipped[s.kind].append(label)
            details.append({"id": label, "index": index, "kind": s.kind, "reason": s.reason})
            continue
        writer.add(sample)
        sources[src] += 1
    bar.close()

    report = {
        "input": {"path": str(json_path.resolve()), "sha256": hashlib.sha256(raw).hexdigest(),
                  "images_dir": str(images_dir.resolve())},
        "input_hash": in_hash.hexdigest(),
        "source": default_source,
        "sources": dict(sorted(sources.items())),
        "ingested": sum(sources.values()),
        "skipped": {k: len(v) for k, v in skipped.items() if v},
        "skipped_ids": {k: v for k, v in skipped.items() if v},
        "limits": limits,
    }
    out = Path(out_dir)
    tmp = out / f".{SKIPPED_JSON}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(report | {"details": details}, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, out / SKIPPED_JSON)
    return writer.close(report)
