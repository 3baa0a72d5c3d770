"""The work dir as a URI: local paths and s3:// (a real S3 API: moto's server on 127.0.0.1)
through the one storage module, with node-local copies keyed by content."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vlmsweep import storage
from vlmsweep.config.errors import ConfigError
from vlmsweep.config.schema import DataConfig
from vlmsweep.config.workdir import WorkDir
from vlmsweep.data.prepare import data_identity, ensure_splits
from vlmsweep.data.shards import iter_samples, read_manifest, shard_files

BUCKET = "vlmsweep-storage-test"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on loopback, configured only through the standard AWS variables."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    storage._filesystem.cache_clear()
    try:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        storage._filesystem.cache_clear()
        server.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMSWEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_local_locations_are_absolute_paths_and_file_uris_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("rel/dir") == str(tmp_path / "rel" / "dir")
    assert storage.normalize(f"file://{tmp_path}/x") == str(tmp_path / "x")
    work = WorkDir.at("w")
    assert work.uri == str(tmp_path / "w") and not work.is_remote and Path(work.uri).is_dir()
    assert work.stages == str(tmp_path / "w" / "stages") and work.local_root == tmp_path / "w"
    # a local location is read in place: no copy
    assert storage.local_copy(work.uri, "any") == Path(work.uri)


def test_bad_work_dirs_are_one_line_errors(tmp_path, s3):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        WorkDir.at(tmp_path / "file")
    with pytest.raises(ConfigError, match="bucket s3://no-such-bucket does not exist"):
        WorkDir.at("s3://no-such-bucket/run")
    with pytest.raises(ConfigError, match="is not storage"):
        WorkDir.at("http://head:8265")


def test_s3_read_write_list_and_copies(s3, tmp_path, cache):
    work = WorkDir.at(f"{s3}/rw")
    assert work.is_remote and work.stages == f"{s3}/rw/stages"
    assert str(work.local_root).startswith(str(cache))
    storage.write_text(work.path("a", "b.txt"), "hello")
    assert storage.read_text(work.path("a", "b.txt")) == "hello" and storage.is_file(work.path("a", "b.txt"))
    assert storage.is_dir(work.path("a")) and storage.list_dir(work.path("a")) == ["b.txt"]
    with pytest.raises(FileNotFoundError):
        storage.read_text(work.path("a", "missing.txt"))

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "manifest.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(b"\0" * 1000)
    storage.upload_dir(src, work.path("out"), last="manifest.json")
    copy = storage.local_copy(work.path("out"), "out@1")
    assert (copy / "sub" / "w.bin").read_bytes() == b"\0" * 1000 and (copy / storage.COMPLETE).exists()
    # keyed by content: a second fetch is the same directory, not a download
    (copy / "sub" / "w.bin").write_bytes(b"cached")
    assert storage.local_copy(work.path("out"), "out@1") == copy and (copy / "sub" / "w.bin").read_bytes() == b"cached"


def test_world_shards_on_s3_read_like_local_ones(s3, tmp_path, cache):
    data = DataConfig(synthetic={"size": "tiny", "image_size": 32})
    local = ensure_splits(data, WorkDir.at(tmp_path / "local"))
    remote = ensure_splits(data, WorkDir.at(f"{s3}/world"))
    assert all(uri.startswith(f"{s3}/world/data/") for uri in remote.values())
    assert data_identity(local) == data_identity(remote)     # identity is content, not location
    split = "instruct"
    assert read_manifest(remote[split]) == read_manifest(local[split])
    assert all(f.startswith("s3://") for f in shard_files(remote[split]))
    first_remote, first_local = next(iter_samples(remote[split])), next(iter_samples(local[split]))
    assert first_remote == first_local
    # the world.json marker went up last; the benchmark sets are built beside it, through the eval registry
    assert json.loads(storage.read_text(storage.join(remote[split], "..", "world.json").replace("/instruct/..", "")))
    from vlmsweep.eval.world_sets import BENCH_DIR, ensure_world_benchmarks

    bench = ensure_world_benchmarks(data, WorkDir.at(f"{s3}/world"))
    assert bench == storage.join(remote[split].rsplit("/", 1)[0], BENCH_DIR)
    assert storage.is_file(storage.join(bench, "benchmarks.json")) and storage.is_dir(storage.join(bench, "pope"))


def test_a_stage_trains_from_s3_shards_into_s3_and_loads_back(s3, tmp_path, cache):
    """Shards, the stage output and Ray Train's checkpoints all in the bucket: nothing of the
    run under a local work dir, only the node's declared cache."""
    import ray
    import torch
    from safetensors.torch import load_file

    from vlmsweep.config.load import resolve
    from vlmsweep.sweep.ray_cluster import ensure_ray
    from vlmsweep.train.stage import run_stage
    from vlmsweep.train.stage_output import is_complete, local_stage, read_config, read_manifest as stage_manifest
    from vlmsweep.train.worker import build_stage_model

    cfg = resolve({"name": "s3-stage", "data": {"synthetic": {"size": "tiny", "image_size": 32}}, "recipe": "base",
                   "training": {"steps": 3, "global_batch": 4, "micro_batch": 1, "workers": 2, "cpus_per_worker": 0.5,
                                "max_length": 384, "checkpoint_every": 2}})
    work = WorkDir.at(f"{s3}/world")   # the world the test above built there, if it ran: one build
    splits = ensure_splits(cfg.data, work)
    out = work.path("stages", "pretrain-s3")
    ensure_ray(num_cpus=2)
    try:
        result = run_stage(cfg, 0, work=work, shard_dir=splits["captions"], out_dir=out, init_dir=None)
    finally:
        ray.shutdown()
    assert result.summary["steps"] == 3 and is_complete(out)
    assert stage_manifest(out)["components"]["connector"]["weights"] == "connector.safetensors"
    assert read_config(out).name == "s3-stage"
    keys = storage.list_dir(out)
    assert {"manifest.json", "connector.safetensors", "config.yaml", "skipped.json"} <= set(keys)
    # Ray Train's run state and the step-2 checkpoint went to the bucket too
    assert storage.list_dir(work.path("ray", "pretrain-s3"))
    # the next stage starts from the bucket's copy, fetched once into the node cache
    copy = local_stage(out)
    assert str(copy).startswith(str(cache))
    vlm, _, _ = build_stage_model(cfg, 1, work.model_root(), out)
    saved = load_file(str(copy / "connector.safetensors"))
    for name, tensor in vlm.connector.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert not (tmp_path / ".vlmsweep").exists()
