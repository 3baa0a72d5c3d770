"""Prepared rows, once per split: one Ray Data execution prepares a small split for every rank,
its rows are cached in the work dir (local or s3://), and a later stage reading the same split
with the same preprocessing takes them from there. Each rank's stream stays what the per-rank
pipelines give (the crc32 row → rank map, in shard order)."""

from __future__ import annotations

import dataclasses
import os

import pyarrow as pa
import pytest

from vlmsweep import storage
from vlmsweep.config.load import resolve
from vlmsweep.config.workdir import WorkDir
from vlmsweep.data import prepared, stream
from vlmsweep.data.prepare import ensure_splits
from vlmsweep.data.shards import read_manifest


def tiny_cfg(**training):
    return resolve({"name": "prep-cache", "data": {"synthetic": {"size": "tiny", "image_size": 32}}, "recipe": "base",
                    "training": {"steps": 2, "global_batch": 4, "micro_batch": 1, "workers": 2, "cpus_per_worker": 0.5,
                                 "max_length": 384, **training}})


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    from vlmsweep.sweep.ray_cluster import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory, ray_cluster):
    from vlmsweep.train.stage import prep_spec

    work = WorkDir.at(tmp_path_factory.mktemp("work"))
    cfg = tiny_cfg()
    splits = ensure_splits(cfg.data, work)
    return work, splits["captions"], prep_spec(cfg, 0, work)


def tables_of(datasets: dict, world: int) -> list[pa.Table]:
    import ray

    out = []
    for r in range(world):
        parts = [t for t in ray.get(datasets[f"train_rank{r}"].to_arrow_refs()) if t.num_rows]
        out.append(pa.concat_tables([t.cast(stream.PREPARED_SCHEMA) for t in parts]))
    return out


def test_one_execution_gives_each_rank_what_its_own_pipeline_gives_and_caches_it(world):
    work, shard_dir, spec = world
    per_rank = tables_of(stream.rank_datasets(shard_dir, 2, spec), 2)   # a pipeline per rank
    data = prepared.stage_datasets(shard_dir, 2, spec)
    assert not data.cache_hit and data.prepared.startswith(storage.join(work.uri, prepared.PREPARED_DIR))
    once = tables_of(data.datasets, 2)
    for r in range(2):
        assert once[r].equals(per_rank[r]), f"rank {r}"
        assert all(stream.rank_of(i, 2) == r for i in once[r].column("id").to_pylist())
    assert sum(t.num_rows for t in once) == read_manifest(shard_dir)["rows"]
    cached = prepared.read_prepared(data.prepared)
    assert cached.num_rows == read_manifest(shard_dir)["rows"]


def test_a_few_rows_are_prepared_in_the_driver_exactly_as_ray_data_prepares_them(world, monkeypatch):
    _, shard_dir, spec = world
    assert read_manifest(shard_dir)["rows"] < prepared.PREPARE_HERE_BELOW_ROWS
    here = prepared.prepare_split(shard_dir, spec)
    monkeypatch.setattr(prepared, "PREPARE_HERE_BELOW_ROWS", 0)
    assert prepared.prepare_split(shard_dir, spec).equals(here)


def test_a_later_stage_reads_the_cache_and_prepares_nothing(world, monkeypatch):
    work, shard_dir, spec = world
    first = tables_of(prepared.stage_datasets(shard_dir, 2, spec).datasets, 2)

    def no_preparing(*_, **__):
        raise AssertionError("the split was prepared again")

    monkeypatch.setattr(prepared, "prepare_split", no_preparing)
    again = prepared.stage_datasets(shard_dir, 2, spec)
    assert again.cache_hit and again.how == "cached"
    for a, b in zip(first, tables_of(again.datasets, 2)):
        assert a.equals(b)
    # the entry is per split and preprocessing, not per worker count: 3 ranks split the same rows
    three = tables_of(prepared.stage_datasets(shard_dir, 3, spec).datasets, 3)
    full = prepared.read_prepared(again.prepared)
    for r in range(3):
        assert three[r].equals(stream.keep_rank(full, r, 3))


def test_the_key_holds_what_changes_prepared_rows_and_not_where_the_work_dir_is(world):
    _, _, spec = world
    key = prepared.prepared_key("split-hash", spec)
    assert prepared.prepared_key("split-hash", dataclasses.replace(spec, work="s3://elsewhere/w")) == key
    changed = [prepared.prepared_key("other-split", spec),
               prepared.prepared_key("split-hash", dataclasses.replace(spec, max_length=spec.max_length + 1)),
               prepared.prepared_key("split-hash", dataclasses.replace(spec, template="vicuna")),
               prepared.prepared_key("split-hash", dataclasses.replace(spec, image_tokens=spec.image_tokens + 1)),
               prepared.prepared_key("split-hash", dataclasses.replace(spec, overlong="drop")),
               prepared.prepared_key("split-hash", spec, identity={"llm": "zoo-key-2"})]
    assert key not in changed and len(set(changed)) == len(changed)


def test_unfinished_and_other_version_entries_are_not_read(tmp_path, monkeypatch):
    table = pa.table({name: pa.array([], type=f.type) for name, f in zip(stream.PREPARED_SCHEMA.names,
                                                                         stream.PREPARED_SCHEMA)})
    entry = str(tmp_path / "entry")
    storage.write_bytes(storage.join(entry, "rows-x.parquet"), b"partial")   # rows without a manifest
    assert prepared.read_prepared(entry) is None
    prepared.write_prepared(entry, table)
    assert prepared.read_prepared(entry).num_rows == 0
    monkeypatch.setattr(prepared, "PREPARED_VERSION", prepared.PREPARED_VERSION + 1)
    assert prepared.read_prepared(entry) is None


def test_large_splits_stream_instead(world, monkeypatch):
    _, shard_dir, spec = world
    monkeypatch.setattr(stream, "MATERIALIZE_BELOW_BYTES", 0)
    data = prepared.stage_datasets(shard_dir, 2, spec)
    assert data.prepared is None and data.how == "streamed" and set(data.datasets) == {"train_rank0", "train_rank1"}


@pytest.fixture
def s3_work(tmp_path, monkeypatch):
    """A moto S3 server on loopback, configured only through the standard AWS variables."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for k, v in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("VLMSWEEP_CACHE", str(tmp_path / "cache"))
    storage._filesystem.cache_clear()
    try:
        boto3.client("s3").create_bucket(Bucket="prepared-test")
        yield WorkDir.at("s3://prepared-test/w")
    finally:
        storage._filesystem.cache_clear()
        server.stop()


def test_entries_live_in_an_s3_work_dir(world, s3_work):
    _, shard_dir, spec = world
    rows = prepared.read_prepared(prepared.stage_datasets(shard_dir, 2, spec).prepared)   # the local entry
    remote = dataclasses.replace(spec, work=s3_work.uri)
    entry = prepared.prepared_entry(read_manifest(shard_dir), remote)
    assert entry.startswith(f"{s3_work.uri}/{prepared.PREPARED_DIR}/")
    assert prepared.read_prepared(entry) is None
    prepared.write_prepared(entry, rows)
    assert prepared.read_prepared(entry).equals(rows)
    assert not os.path.exists(storage.join(str(s3_work.local_root), prepared.PREPARED_DIR))


def test_a_stage_trained_twice_from_fresh_work_dirs_gives_equal_weights(tmp_path, ray_cluster):
    """Prepared in the driver, put in the object store, read by two workers: the same weights
    each time, whether the rows were prepared by this stage or found in the cache."""
    import torch
    from safetensors.torch import load_file

    from vlmsweep.data.prepare import data_identity
    from vlmsweep.train.stage import run_stage, stage_id

    weights = []
    for label in ("first", "second", "cached"):
        work = WorkDir.at(tmp_path / ("first" if label == "cached" else label))
        cfg = tiny_cfg(steps=4, checkpoint_every=100)
        splits = ensure_splits(cfg.data, work)
        out = storage.join(work.stages, f"{label}-{stage_id(cfg, 0, data_identity(splits))}")
        result = run_stage(cfg, 0, work=work, shard_dir=splits["captions"], out_dir=out, init_dir=None)
        assert result.summary["steps"] == 4
        weights.append(load_file(storage.join(out, "connector.safetensors")))
    for other in weights[1:]:
        for name, tensor in weights[0].items():
            assert torch.equal(tensor, other[name]), name


def test_a_text_only_mix_keeps_the_same_rows_streamed_or_prepared(world):
    """data.text_only_ratio thins the rows after preparation on both paths: the per-rank pipelines
    and the prepared split keep the same rows, in the same order; the cache holds the whole split."""
    from vlmsweep.data.mix import plan_mix

    work, _, spec = world
    shard_dir = ensure_splits(tiny_cfg().data, work)["instruct"]
    manifest = read_manifest(shard_dir)
    assert manifest["modalities"].get("text", 0) > 0
    mix = plan_mix(manifest["modalities"], 0.5, seed=0)
    assert mix.keep_image < 1 == mix.keep_text
    instruct_spec = dataclasses.replace(spec, template="chatml")
    streamed = tables_of(stream.rank_datasets(shard_dir, 2, instruct_spec, mix=mix), 2)
    data = prepared.stage_datasets(shard_dir, 2, instruct_spec, mix=mix)
    once = tables_of(data.datasets, 2)
    for r in range(2):
        assert once[r].equals(streamed[r]), f"rank {r}"
    counts = data.mix_counts
    assert sum(t.num_rows for t in once) == data.rows < manifest["rows"] == prepared.read_prepared(data.prepared).num_rows
    assert counts["text_kept"] == counts["text_total"] > 0 and counts["image_kept"] < counts["image_total"]
    assert abs(counts["text_only_share"] - 0.5) < 0.15   # a few dozen rows: the share in expectation
