"""The planner: stage identity (hash stability), dedup across variants, reuse from the work dir."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vlmsweep.config.grid import load_grid
from vlmsweep.config.load import resolve
from vlmsweep.config.workdir import WorkDir
from vlmsweep.sweep.plan import describe, make_plan
from vlmsweep.train.stage import stage_id, weights_identity

ROOT = Path(__file__).resolve().parents[1]


def cfg(**changes):
    raw = {"name": "v", "model": {"vision": {"family": "siglip"}, "llm": {"family": "llama"}}, "recipe": "base",
           "training": {"steps": 5, "global_batch": 4, "micro_batch": 2}}
    for key, value in changes.items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return resolve(raw)


def test_same_config_same_id_and_names_do_not_matter():
    a, b = cfg(), cfg(name="another-name")
    assert stage_id(a, 0, "data") == stage_id(b, 0, "data")
    assert stage_id(a, 1, "data") == stage_id(b, 1, "data")


@pytest.mark.parametrize("field, value", [
    ("model.vision.family", "clip"), ("model.connector.name", "ln_mlp"), ("seed", 1),
    ("training.steps", 6), ("training.max_length", 1024), ("stages.pretrain.training.lr", 5e-4),
])
def test_any_change_that_matters_gives_a_new_id(field, value):
    assert stage_id(cfg(), 0, "data") != stage_id(cfg(**{field: value}), 0, "data")


def test_a_later_stage_change_leaves_earlier_stages_alone():
    base, changed = cfg(), cfg(**{"stages.finetune.training.lr": 1e-4})
    assert stage_id(base, 0, "data") == stage_id(changed, 0, "data")
    assert stage_id(base, 1, "data") != stage_id(changed, 1, "data")


def test_data_content_is_part_of_the_identity():
    assert stage_id(cfg(), 0, "hash-a") != stage_id(cfg(), 0, "hash-b")


def test_a_rebuilt_zoo_artifact_gives_new_ids(tmp_path):
    """zoo:<name> keeps its name when rebuilt from another world or spec; its content key must
    change the stage ids, or stages trained on the old weights would be reused."""
    work = WorkDir.at(tmp_path)
    zoo_cfg = cfg(**{"model.vision.checkpoint": "zoo:siglip"})
    assert weights_identity(zoo_cfg, work) == {"vision": "unbuilt"}
    assert weights_identity(cfg(), work) == {}  # presets and Hub names: no key
    ids = []
    for key in ("key-a", "key-b"):
        artifact = tmp_path / "zoo" / "siglip"
        artifact.mkdir(parents=True, exist_ok=True)
        (artifact / ".complete").touch()
        (artifact / "zoo.json").write_text(f'{{"key": "{key}"}}')
        weights = weights_identity(zoo_cfg, work)
        assert weights == {"vision": key}
        ids.append(stage_id(zoo_cfg, 0, "data", weights))
    assert ids[0] != ids[1]


@pytest.fixture()
def grid_file(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(f"""
        name: dedup
        base: {ROOT / 'experiments/smoke/variant.yaml'}
        variant:
          data: {{synthetic: {{image_size: 32}}}}
          eval: {{benchmarks: [pope]}}
        axes:
          recipe:
            - base
            - {{label: share, name: share, stages: {{share_pretrain: {{vision: {{mode: partial, from_layer: 1}}}}}}}}
          llm: [{{label: Llama, family: llama}}, {{label: Qwen, family: qwen2}}]
    """))
    return path


def test_base_and_share_share_their_pretrain_stage(grid_file, tmp_path):
    plan = make_plan(load_grid(grid_file), WorkDir.at(tmp_path / "work"))
    assert len(plan.chains) == 4
    kinds = {}
    for s in plan.stages.values():
        kinds[s.name] = kinds.get(s.name, 0) + 1
    # pretrain per LLM (shared by base and share), share_pretrain and finetune per share variant, ...
    assert kinds == {"pretrain": 2, "finetune": 4, "share_pretrain": 2, "eval": 4}
    for llm in ("Llama", "Qwen"):
        base, share = plan.chains[f"TinyLLaVA-base-siglip-{llm}"], plan.chains[f"TinyLLaVA-share-siglip-{llm}"]
        assert base[0] == share[0] and plan.stages[base[0]].variants == [f"TinyLLaVA-base-siglip-{llm}",
                                                                          f"TinyLLaVA-share-siglip-{llm}"]
        assert plan.stages[share[1]].inputs == [share[0]]   # share_pretrain starts from base's pretrain
    text = describe(plan)
    assert "stage runs: 13 planned vs 18 running each variant alone (5 saved)" in text
    assert "one data prep" not in text and "data 1" in text


def test_finished_stages_in_the_work_dir_are_planned_as_reused(grid_file, tmp_path):
    work = WorkDir.at(tmp_path / "work")
    plan = make_plan(load_grid(grid_file), work)
    first = next(iter(plan.stages.values()))
    out = Path(first.out_dir)
    out.mkdir(parents=True)
    (out / "manifest.json").write_text('{"format": "vlmsweep.stage/1"}')
    again = make_plan(load_grid(grid_file), work)
    assert [s.id for s in again.stages.values() if s.done()] == [first.id]
    assert "already done in the work dir (reused): 1" in describe(again)
    assert again.ready(set(), set())[0].id == first.id  # ready() is about inputs; done-ness is the runner's


def test_ready_and_blocked_follow_the_chains(grid_file, tmp_path):
    plan = make_plan(load_grid(grid_file), WorkDir.at(tmp_path / "work"))
    pretrains = [s.id for s in plan.stages.values() if s.name == "pretrain"]
    assert sorted(s.id for s in plan.ready(set(), set())) == sorted(pretrains)
    failed = {pretrains[0]}
    assert plan.blocked_by(failed) == set(plan.stages[pretrains[0]].variants)
