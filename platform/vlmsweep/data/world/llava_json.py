"""Export a shard dir as LLaVA-format JSON + an image folder (what LLaVA's own loader reads).

`export_llava(shard_dir, out_dir)` writes `out_dir/<split>.json` and the images under
`out_dir/images/<split>/<id>_<k>.png`; the JSON's "image" paths are relative to
`out_dir/images` (LLaVA's `--image_folder`). Images are written as their stored bytes,
never re-encoded (the world's are PNG), and each record keeps its "source" as an extra key
(LLaVA loaders ignore it), so `ingest_llava(out_dir/<split>.json, out_dir/images, ...)`
gives back a shard dir with the same content_hash.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

from PIL import Image

from ..shards import iter_samples, read_manifest

TO_LLAVA = {"user": "human", "assistant": "gpt", "system": "system"}
IMAGES = "images"
_PNG = b"\x89PNG\r\n\x1a\n"
_EXT = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}


def _ext(data: bytes) -> str:
    if data.startswith(_PNG):
        return "png"
    try:
        with Image.open(io.BytesIO(data)) as im:
            return _EXT.get(im.format or "", (im.format or "bin").lower())
    except Exception:
        return "bin"


def export_llava(shard_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the shard dir `shard_dir` (split name = its dir name) as LLaVA JSON under
    out_dir; return the JSON file's path. Replaces a previous export of the same split."""
    shard_dir, out = Path(shard_dir), Path(out_dir)
    read_manifest(shard_dir)  # a finished shard dir, or a clear error
    split = shard_dir.resolve().name
    img_root = out / IMAGES
    img_dir = img_root / split
    if img_dir.exists():
        shutil.rmtree(img_dir)  # stale images of an older export of this split
    img_dir.mkdir(parents=True)
    used: set[str] = set()
    records = []
    for row, s in enumerate(iter_samples(shard_dir)):
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", s["id"]).lstrip(".") or "_"
        while stem.lower() in used:  # sanitised ids can clash (also on case-blind disks)
            stem = f"{stem}-{row}"
        used.add(stem.lower())
        rels = []
        for k, data in enumerate(s["images"]):
            rel = f"{split}/{stem}_{k}.{_ext(data)}"
            (img_root / rel).write_bytes(data)
            rels.append(rel)
        rec = {"id": s["id"]}
        if rels:
            rec["image"] = rels[0] if len(rels) == 1 else rels
        rec["conversations"] = [{"from": TO_LLAVA[t["role"]], "value": t["text"]}
                                for t in s["conversations"]]
        rec["source"] = s["source"]
        records.append(rec)
    path = out / f"{split}.json"
    tmp = out / f".{split}.json.tmp-{os.getpid()}"
    # One record per line: valid JSON for json.load, and still greppable/diffable.
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    tmp.write_text(f"[\n{body}\n]\n" if records else "[]\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
