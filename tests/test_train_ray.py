"""Training through Ray Train + DeepSpeed, end to end, on the local machine.

One module-scoped Ray cluster (2 CPUs) serves every test; stages are tiny (32 px world,
tiny presets, a few steps) so the module runs in a couple of minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmsweep.config.load import resolve
from vlmsweep.config.workdir import WorkDir
from vlmsweep.data.prepare import data_identity, ensure_splits
from vlmsweep.train.stage import run_stage, stage_id
from vlmsweep.train.stage_output import read_manifest
from vlmsweep.train.worker import build_stage_model


def tiny_variant(**training):
    base = {"steps": 6, "global_batch": 4, "micro_batch": 1, "workers": 2, "cpus_per_worker": 0.5,
            "zero_stage": 2, "max_length": 384, "checkpoint_every": 2}
    return resolve({
        "name": "ray-test",
        "model": {"vision": {"family": "siglip"}, "llm": {"family": "llama"}, "connector": {"name": "mlp2x_gelu"}},
        "data": {"synthetic": {"size": "tiny", "image_size": 32}},
        "recipe": "base",
        "training": {**base, **training},
        "stages": {"finetune": {"training": {"lr": 1e-3}}},
    })


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    from vlmsweep.sweep.ray_cluster import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def work(tmp_path_factory, ray_cluster):
    return WorkDir.at(tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="module")
def variant_run(work, monkeypatch_module):
    """The whole variant (pretrain → finetune) through the same path as `vlmsweep run`."""
    from vlmsweep.sweep.variant import run_variant

    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work.local_root / 'mlflow.db'}")
    cfg = tiny_variant()
    return cfg, run_variant(cfg, work, log=lambda *_: None)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_two_worker_zero2_variant_trains_both_stages(variant_run):
    cfg, result = variant_run
    assert [s.name for s in result.stages] == ["pretrain", "finetune"]
    for stage in result.stages:
        manifest = read_manifest(stage.out_dir)
        assert manifest["steps"] == 6 and not stage.reused
        assert (Path(stage.out_dir) / "config.yaml").is_file()
    pretrain, finetune = (read_manifest(s.out_dir) for s in result.stages)
    # pretrain trains the connector only: only it is saved; finetune also saves the LLM
    assert {c for c, e in pretrain["components"].items() if e["weights"]} == {"connector"}
    assert {c for c, e in finetune["components"].items() if e["weights"]} == {"connector", "llm"}
    assert finetune["final_loss"] < finetune["first_loss"]


def test_stages_are_tracked_in_mlflow(variant_run, work):
    from mlflow.tracking import MlflowClient

    _, result = variant_run
    client = MlflowClient(work.tracking_uri)
    variant = client.get_run(result.run_id)
    assert variant.info.status == "FINISHED"
    assert variant.data.params["model.vision.family"] == "siglip"
    assert variant.data.params["recipe.stages.finetune.training.lr"] == "0.001"
    exp = variant.info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["finetune", "pretrain"]
    for run in children:
        assert run.info.status == "FINISHED"
        losses = client.get_metric_history(run.info.run_id, "train/loss")
        assert [m.step for m in losses] == list(range(1, 7))
        for key in ("train/tokens_per_s", "train/real_token_fraction", "train/lr"):
            assert client.get_metric_history(run.info.run_id, key)
        assert "training.global_batch" in run.data.params
        assert run.data.metrics["stage/params/connector/trainable"] > 0
    pretrain = next(r for r in children if r.info.run_name == "pretrain")
    assert pretrain.data.tags["tune.llm"] == "frozen" and pretrain.data.metrics["stage/params/llm/trainable"] == 0


def test_finetune_starts_from_the_pretrained_connector(variant_run, work):
    cfg, result = variant_run
    pretrain_dir = result.stages[0].out_dir
    saved = load_file(str(Path(pretrain_dir) / "connector.safetensors"))
    vlm, _, _ = build_stage_model(cfg, 1, work.model_root(), pretrain_dir)
    for name, tensor in vlm.connector.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    # and not merely the seed's fresh init
    fresh, _, _ = build_stage_model(cfg, 1, work.model_root(), None)
    assert not all(torch.equal(a, b) for a, b in zip(fresh.connector.state_dict().values(), saved.values()))


def test_rerun_reuses_finished_stages(variant_run, work):
    from vlmsweep.sweep.variant import run_variant

    cfg, first = variant_run
    again = run_variant(cfg, work, log=lambda *_: None)
    assert [s.reused for s in again.stages] == [True, True]
    assert [s.out_dir for s in again.stages] == [s.out_dir for s in first.stages]


def test_worker_killed_mid_stage_resumes_from_checkpoint_exactly(work, variant_run):
    """A worker dies hard at step 5; Ray Train restarts the group from the last registered
    checkpoint (step 4, or step 2 when the step-4 report had not been registered yet: Ray
    registers a checkpoint up to one poll interval after the report). Model, optimizer, lr
    progress and data position all resume: the result equals an uninterrupted run."""
    splits = ensure_splits(tiny_variant().data, work)
    outputs = {}
    for label, fail in (("clean", None), ("killed", 5)):
        cfg = tiny_variant(fail_at_step=fail, checkpoint_every=2, max_failures=1)
        out = Path(work.stages) / f"resume-{label}-{stage_id(cfg, 0, data_identity(splits))}"
        result = run_stage(cfg, 0, work=work, shard_dir=splits["captions"], out_dir=str(out), init_dir=None)
        outputs[label] = (out, result.summary)
    clean, killed = outputs["clean"], outputs["killed"]
    assert (killed[0] / ".failure_injected").exists()
    assert killed[1]["resumed_from_step"] in (2, 4) and clean[1]["resumed_from_step"] is None
    assert killed[1]["steps"] == clean[1]["steps"] == 6
    a, b = (load_file(str(o / "connector.safetensors")) for o, _ in (clean, killed))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    assert json.loads((killed[0] / "skipped.json").read_text()) == json.loads((clean[0] / "skipped.json").read_text())


def test_stage_trains_from_ingested_llava_json_and_reports_unusable_samples(work, tmp_path):
    """LLaVA JSON + image folder → ingest (bad samples counted there) → shards → a Ray Data
    stage; samples only the tokenizer can reject (over max_length, overlong: drop) are
    counted by the trainer with their ids."""
    from vlmsweep.data.ingest import ingest_llava
    from vlmsweep.data.prepare import world_dir

    ensure_splits(tiny_variant().data, work)
    world = Path(world_dir(tiny_variant().data, work)) / "llava"
    records = json.loads((world / "instruct.json").read_text())[:48]
    too_long = [{"id": f"long-{k}", "conversations": [{"from": "human", "value": "Tell me everything."},
                                                       {"from": "gpt", "value": "word " * 400}]} for k in range(3)]
    missing = [{"id": "ghost", "image": "nowhere.png",
                "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "No."}]}]
    # over-long samples first: the stage counts what its stream reads, and 3 steps read only part of it
    (tmp_path / "data.json").write_text(json.dumps(too_long + records + missing))
    manifest = ingest_llava(tmp_path / "data.json", world / "images", tmp_path / "shards", progress=False)
    assert manifest["skipped"] == {"missing_image": 1} and manifest["rows"] == 51

    cfg = resolve({"name": "ingested", "model": {"vision": {"family": "siglip"}, "llm": {"family": "llama"}},
                   "data": {"name": "llava-json", "source": "shards", "splits": {"instruct": str(tmp_path / "shards")}},
                   "recipe": "single_stage",
                   "training": {"steps": 3, "global_batch": 4, "micro_batch": 1, "workers": 2, "cpus_per_worker": 0.5,
                                "max_length": 384, "overlong": "drop", "checkpoint_every": 10, "lr": 1e-3,
                                "shuffle_buffer": 0}})   # read as written: the over-long ones come first
    out = Path(work.stages) / "ingested-single-stage"
    result = run_stage(cfg, 0, work=work, shard_dir=str(tmp_path / "shards"), out_dir=str(out), init_dir=None)
    assert result.summary["steps"] == 3
    skipped = json.loads((out / "skipped.json").read_text())
    # the three planted ones, plus any world sample over 384 byte-level tokens
    assert {"long-0", "long-1", "long-2"} <= set(skipped["too_long"])
    assert set(skipped) == {"too_long"}
    assert read_manifest(out)["skipped"] == {"too_long": len(skipped["too_long"])}
