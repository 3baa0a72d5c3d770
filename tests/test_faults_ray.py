"""Faults met by a running stage, through Ray Train + DeepSpeed: a full disk while a checkpoint
or the stage output is written, and a corrupt shard met by a worker's stream. Each time the
stage fails with its reason (in the sweep's summary and in MLflow), the last good checkpoint
and the finished stages stay intact, and running again continues from that checkpoint."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmsweep.config.grid import load_grid
from vlmsweep.config.load import resolve
from vlmsweep.config.workdir import WorkDir
from vlmsweep.data import prepared
from vlmsweep.data.prepare import data_identity, ensure_splits
from vlmsweep.data.shards import iter_samples, read_manifest, write_shards
from vlmsweep.train.faults import MARKER
from vlmsweep.train.stage import run_stage, stage_id
from vlmsweep.train.stage_output import is_complete
from vlmsweep.train.stage_output import read_manifest as read_stage

ROOT = Path(__file__).resolve().parents[1]
TRAINING = {"steps": 6, "global_batch": 4, "micro_batch": 1, "workers": 2, "cpus_per_worker": 0.5,
            "max_length": 384, "checkpoint_every": 2, "max_failures": 0}


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    from vlmsweep.sweep.ray_cluster import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_full_disk_at_a_checkpoint_fails_the_stage_and_resume_continues(tmp_path, ray_cluster, monkeypatch):
    from mlflow.tracking import MlflowClient

    from vlmsweep.sweep.runner import run_sweep

    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(textwrap.dedent(f"""
        name: disk-full
        base: {ROOT / 'experiments/smoke/variant.yaml'}
        variant:
          data: {{synthetic: {{image_size: 32}}}}
          training: {{steps: 6, global_batch: 4, micro_batch: 1, workers: 2, cpus_per_worker: 0.5, max_length: 384,
                      checkpoint_every: 2, max_failures: 0}}
          stages: {{finetune: {{training: {{fail_at_step: 4, fail_with: enospc_checkpoint}}}}}}
          eval: {{benchmarks: []}}
        naming: "{{recipe}}"
        axes:
          recipe: [base]
    """))
    work = WorkDir.at(tmp_path / "work")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", work.tracking_uri)
    first = run_sweep(load_grid(grid_file), work, retries=0, log=lambda *_: None)
    pretrain, finetune = (first.plan.stages[s] for s in first.plan.chains["base"])
    assert first.variants["base"] != "FINISHED"
    assert "No space left on device" in first.failed[finetune.id]
    assert is_complete(pretrain.out_dir) and not is_complete(finetune.out_dir)
    pretrain_made = read_stage(pretrain.out_dir)["created"]

    client = MlflowClient(work.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("vlmsweep").experiment_id],
                              f"tags.`vlmsweep.stage_id` = '{finetune.id}'")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "No space left on device" in runs[0].data.tags["vlmsweep.error"]

    again = run_sweep(load_grid(grid_file), work, resume=True, retries=0, log=lambda *_: None)
    assert again.variants["base"] == "FINISHED" and pretrain.id in again.reused
    assert read_stage(pretrain.out_dir)["created"] == pretrain_made      # the finished stage untouched
    resumed = read_stage(finetune.out_dir)
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 6   # the step-4 checkpoint never registered


@pytest.fixture(scope="module")
def captions(tmp_path_factory, ray_cluster):
    work = WorkDir.at(tmp_path_factory.mktemp("work"))
    cfg = resolve({"name": "faults", "data": {"synthetic": {"size": "tiny", "image_size": 32}},
                   "recipe": "single_stage", "training": TRAINING})
    return work, cfg, ensure_splits(cfg.data, work)


def _run(work, cfg, shard_dir, label):
    out = Path(work.stages) / f"{label}-{stage_id(cfg, 0, data_identity({'x': shard_dir}))}"
    return out, lambda: run_stage(cfg, 0, work=work, shard_dir=shard_dir, out_dir=str(out), init_dir=None)


def test_full_disk_writing_the_stage_output_loses_no_training(captions):
    work, cfg, splits = captions
    cfg = cfg.model_copy(deep=True)
    cfg.recipe.stages[0].training.fail_at_step, cfg.recipe.stages[0].training.fail_with = 1, "enospc_output"
    out, run = _run(work, cfg, splits["captions"], "output-full")
    with pytest.raises(Exception, match="No space left on device"):
        run()
    assert sorted(p.name for p in out.iterdir()) == [MARKER]       # no weights, no manifest
    result = run()
    assert result.summary["resumed_from_step"] == 4 and result.summary["steps"] == 6 and is_complete(out)


def test_a_corrupt_shard_fails_the_stage_naming_it_and_a_repaired_one_resumes(captions, tmp_path, monkeypatch):
    """The split streams (as a large one would): each worker reads the shards itself, in Ray Data."""
    work, cfg, splits = captions
    shard_dir = tmp_path / "captions"
    write_shards(iter_samples(splits["captions"]), shard_dir, max_rows_per_shard=32)
    files = [s["file"] for s in read_manifest(shard_dir)["shards"]]
    assert len(files) >= 4
    corrupt = shard_dir / files[2]
    good = corrupt.read_bytes()
    middle = len(good) // 2                      # the data pages: the footer still reads
    corrupt.write_bytes(good[:middle] + bytes(b ^ 0xFF for b in good[middle:middle + 4096]) + good[middle + 4096:])
    monkeypatch.setattr(prepared, "is_small", lambda *_: False)

    out, run = _run(work, cfg, str(shard_dir), "corrupt")
    with pytest.raises(Exception) as err:
        run()
    assert f"shard {shard_dir / files[2]} is unreadable" in str(err.value)
    assert not is_complete(out)

    corrupt.write_bytes(good)                     # repaired (restored, re-ingested): the same content
    result = run()
    assert result.summary["steps"] == 6 and is_complete(out)
    clean_out, clean = _run(work, cfg, str(shard_dir), "clean")
    clean()
    a, b = (load_file(str(o / "connector.safetensors")) for o in (out, clean_out))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
