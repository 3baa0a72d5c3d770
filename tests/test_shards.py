"""The shard format: round trip, bounds, determinism, and errors that name what's wrong."""

from __future__ import annotations

import json
import os

import pytest

import vlmsweep
from vlmsweep.data.shards import (IMAGE_MARKER, SHARD_SCHEMA, iter_samples, read_manifest,
                                  shard_files, write_shards)


def _sample(i: int, n_images: int = 1, *, payload: int = 8, system: bool = False) -> dict:
    modality = {0: "text", 1: "image"}.get(n_images, "multi_image")
    turns = [{"role": "system", "text": "be brief"}] if system else []
    turns += [{"role": "user", "text": "<image>\n" * n_images + f"question {i}?"},
              {"role": "assistant", "text": f"answer {i}"}]
    return {"id": f"s{i:04d}", "images": [bytes([i % 256, k]) * payload for k in range(n_images)],
            "conversations": turns, "source": "test/unit", "modality": modality}


def _mixed(n: int) -> list[dict]:
    return [_sample(i, n_images=i % 3, system=i % 4 == 0) for i in range(n)]


def test_marker_matches_package_constant():
    assert IMAGE_MARKER == vlmsweep.IMAGE_MARKER
    assert SHARD_SCHEMA.names == ["id", "images", "conversations", "source", "modality"]


def test_round_trip(tmp_path):
    samples = _mixed(25)
    manifest = write_shards(samples, tmp_path / "ds", extra_manifest={"note": "hi"})
    assert manifest["rows"] == 25 and manifest["note"] == "hi"
    assert manifest["modalities"] == {"image": 8, "multi_image": 8, "text": 9}
    assert read_manifest(tmp_path / "ds") == manifest
    assert list(iter_samples(tmp_path / "ds")) == samples


def test_rows_per_shard_bound(tmp_path):
    samples = _mixed(10)
    manifest = write_shards(samples, tmp_path, max_rows_per_shard=3)
    assert [s["rows"] for s in manifest["shards"]] == [3, 3, 3, 1]
    files = shard_files(tmp_path)
    assert files == sorted(files) and all(os.path.isabs(f) for f in files)
    assert [os.path.basename(f) for f in files] == [f"shard-{i:05d}.parquet" for i in range(4)]
    assert [s["bytes"] for s in manifest["shards"]] == [os.path.getsize(f) for f in files]
    assert list(iter_samples(tmp_path)) == samples  # order survives sharding


def test_bytes_per_shard_bound(tmp_path):
    samples = [_sample(i, payload=500) for i in range(9)]  # ~1 KB of image per row
    manifest = write_shards(samples, tmp_path, max_bytes_per_shard=2500)
    assert len(manifest["shards"]) > 1
    assert all(s["rows"] <= 2 for s in manifest["shards"])
    assert sum(s["rows"] for s in manifest["shards"]) == 9


def test_deterministic_hash_and_bytes(tmp_path):
    samples = _mixed(12)
    a = write_shards(samples, tmp_path / "a", max_rows_per_shard=5)
    b = write_shards(samples, tmp_path / "b", max_rows_per_shard=5)
    assert a["content_hash"] == b["content_hash"]
    for fa, fb in zip(shard_files(tmp_path / "a"), shard_files(tmp_path / "b")):
        assert open(fa, "rb").read() == open(fb, "rb").read()
    # the hash is over content, not layout; and any change to content changes it
    c = write_shards(samples, tmp_path / "c", max_rows_per_shard=100)
    assert c["content_hash"] == a["content_hash"]
    changed = _mixed(12)
    changed[5]["conversations"][-1]["text"] += "!"
    assert write_shards(changed, tmp_path / "d")["content_hash"] != a["content_hash"]


def test_rewrite_removes_stale_shards(tmp_path):
    write_shards(_mixed(10), tmp_path, max_rows_per_shard=2)
    write_shards(_mixed(3), tmp_path, max_rows_per_shard=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json", "shard-00000.parquet", "shard-00001.parquet"]
    assert len(list(iter_samples(tmp_path))) == 3


@pytest.mark.parametrize("mutate, field", [
    (lambda s: s["conversations"][0].update(text="no marker here"), "images"),
    (lambda s: s["images"].append(b"extra"), "images"),
    (lambda s: s["conversations"][1].update(role="robot"), "conversations[1].role"),
    (lambda s: s["conversations"][1].update(text="<image> sneaky"), "conversations[1].text"),
    (lambda s: s.update(modality="text"), "modality"),
    (lambda s: s.pop("source"), "source"),
    (lambda s: s.update(extra=1), "extra"),
    (lambda s: s["conversations"].pop(), "conversations"),
    (lambda s: s["images"].__setitem__(0, "not bytes"), "images[0]"),
])
def test_malformed_sample_names_id_and_field(tmp_path, mutate, field):
    bad = _sample(7)
    mutate(bad)
    with pytest.raises(ValueError) as err:
        write_shards([_sample(1), bad], tmp_path)
    assert "s0007" in str(err.value) and repr(field) in str(err.value)
    # the failed write left no manifest, so the half-written dir never reads as a dataset
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path)


def test_duplicate_id_rejected(tmp_path):
    with pytest.raises(ValueError, match="s0003.*duplicate"):
        write_shards([_sample(3), _sample(3)], tmp_path)


def test_missing_manifest_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        read_manifest(tmp_path)
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        shard_files(missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        list(iter_samples(missing))


def test_bad_manifest_names_path(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=str(tmp_path)):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99, "rows": 0, "shards": []}))
    with pytest.raises(ValueError, match="schema_version"):
        read_manifest(tmp_path)


def test_missing_shard_file_named(tmp_path):
    write_shards(_mixed(4), tmp_path, max_rows_per_shard=2)
    (tmp_path / "shard-00001.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="shard-00001.parquet"):
        shard_files(tmp_path)


def test_empty_dataset(tmp_path):
    manifest = write_shards([], tmp_path)
    assert manifest["rows"] == 0 and manifest["shards"] == []
    assert list(iter_samples(tmp_path)) == []
