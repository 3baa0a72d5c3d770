"""Faults that must lose nothing: a full disk while a stage output or a checkpoint is written,
and a corrupt shard met mid-stage. The stage fails with its reason, the last good checkpoint
and every finished stage stay intact, and running the stage again continues from there."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmsweep.config.load import dump_resolved, resolve
from vlmsweep.models.vlm import build_vlm
from vlmsweep.train import stage_output
from vlmsweep.train.stage_output import is_complete, read_manifest, save_stage

MODES = {"vision": "frozen", "connector": "full", "llm": "full"}


@pytest.fixture(scope="module")
def tiny_vlm(preset_root):
    cfg = resolve({"name": "faults", "recipe": "single_stage", "training": {"steps": 1, "global_batch": 1,
                                                                             "micro_batch": 1}})
    torch.manual_seed(0)
    return cfg, build_vlm(cfg.model, preset_root)


def _disk_fills_after(monkeypatch, n_files: int):
    """safetensors' save_file writes half of the n-th file, then the disk is full."""
    real, calls = stage_output.save_file, []

    def save_file(tensors, path):
        calls.append(path)
        if len(calls) == n_files:
            Path(path).write_bytes(b"\0" * 100)   # what reached the disk before it filled
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, path)

    monkeypatch.setattr(stage_output, "save_file", save_file)


@pytest.mark.parametrize("fails_at", [1, 2], ids=["first-file", "second-file"])
def test_a_full_disk_leaves_no_file_under_the_output_name_and_a_retry_writes_it_whole(
        tiny_vlm, tmp_path, monkeypatch, fails_at):
    cfg, vlm = tiny_vlm
    out = tmp_path / "stages" / "finetune-abc"
    out.mkdir(parents=True)
    (out / "connector.safetensors").write_bytes(b"left by an attempt that died")   # and no manifest
    kwargs = dict(stage="finetune", modes=MODES, init_dir=None, config_yaml=dump_resolved(cfg), summary={"steps": 1},
                  files={"skipped.json": "{}"})
    with monkeypatch.context() as m:
        _disk_fills_after(m, fails_at)
        with pytest.raises(OSError) as err:
            save_stage(vlm, out, **kwargs)
    assert err.value.errno == errno.ENOSPC
    assert not is_complete(out)
    assert sorted(p.name for p in out.iterdir()) == ["connector.safetensors"]   # untouched, nothing new
    assert (out / "connector.safetensors").read_bytes() == b"left by an attempt that died"
    assert [p.name for p in out.parent.iterdir()] == ["finetune-abc"], "the partial copy was not removed"

    manifest = save_stage(vlm, out, **kwargs)
    assert is_complete(out) and read_manifest(out)["created"] == manifest["created"]
    saved = load_file(str(out / "connector.safetensors"))
    for name, tensor in vlm.connector.state_dict().items():
        assert torch.equal(saved[name], tensor), name
    assert json.loads((out / "skipped.json").read_text()) == {}
    assert [p.name for p in out.parent.iterdir()] == ["finetune-abc"]


def test_a_finished_output_is_never_touched_by_a_failing_write(tiny_vlm, tmp_path, monkeypatch):
    cfg, vlm = tiny_vlm
    out = tmp_path / "done"
    kwargs = dict(stage="finetune", modes=MODES, init_dir=None, config_yaml=dump_resolved(cfg), summary={"steps": 1})
    save_stage(vlm, out, **kwargs)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with monkeypatch.context() as m:
        _disk_fills_after(m, 2)
        with pytest.raises(OSError):
            save_stage(vlm, out, **kwargs)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
