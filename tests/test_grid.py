"""Grid expansion: a grid YAML becomes resolved variants in a fixed order with unique, readable
names; include/exclude filter; every axis lands in the resolved config; and every problem of
every variant is reported at once, pointing at the line that caused it."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from vlmsweep.config.errors import ConfigError
from vlmsweep.config.grid import load_any, load_grid, select, single_variant_grid

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke" / "variant.yaml"

AXES = """
axes:
  recipe: [base, share]
  vision:
    - {label: Sig, family: siglip, checkpoint: tiny}
    - {label: CLIP, family: clip, checkpoint: tiny}
  llm: [{label: Llama, family: llama}, {label: Phi, family: phi}]
"""


def write(tmp_path: Path, text: str, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def grid_file(tmp_path: Path, body: str = AXES, head: str = "") -> Path:
    return write(tmp_path, f"name: g\nbase: {SMOKE}\n{textwrap.dedent(head)}{textwrap.dedent(body)}")


def grid_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_grid(path)
    return err.value


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


# ---- expansion and naming ----

def test_cartesian_product_in_yaml_order_with_the_default_names(tmp_path):
    grid = load_grid(grid_file(tmp_path))
    assert grid.name == "g"
    assert grid.axes == {"recipe": ["base", "share"], "vision": ["Sig", "CLIP"], "llm": ["Llama", "Phi"]}
    assert [v.name for v in grid.variants] == [
        "TinyLLaVA-base-Sig-Llama", "TinyLLaVA-base-Sig-Phi", "TinyLLaVA-base-CLIP-Llama", "TinyLLaVA-base-CLIP-Phi",
        "TinyLLaVA-share-Sig-Llama", "TinyLLaVA-share-Sig-Phi", "TinyLLaVA-share-CLIP-Llama",
        "TinyLLaVA-share-CLIP-Phi"]
    v = grid.variants[6]
    assert v.axes == {"recipe": "share", "vision": "CLIP", "llm": "Llama"}
    assert v.config.name == v.name
    assert (v.config.model.vision.family, v.config.model.llm.family) == ("clip", "llama")
    # the base file's fields not touched by an axis are kept
    assert v.config.recipe.stages[0].training.global_batch == 8


def test_expansion_is_deterministic(tmp_path):
    path = grid_file(tmp_path)
    a, b = load_grid(path), load_grid(path)
    assert [(v.name, v.axes, v.config) for v in a.variants] == [(v.name, v.axes, v.config) for v in b.variants]


def test_recipe_axis_gives_that_recipes_stages(tmp_path):
    grid = load_grid(grid_file(tmp_path))
    stages = {v.axes["recipe"]: [s.name for s in v.config.recipe.stages] for v in grid.variants}
    assert stages == {"base": ["pretrain", "finetune"], "share": ["pretrain", "share_pretrain", "finetune"]}
    share = next(v for v in grid.variants if v.axes["recipe"] == "share").config
    assert share.recipe.name == "share"
    assert share.recipe.stages[1].vision.mode == "partial" and share.recipe.stages[1].vision.from_layer == 12


def test_collisions_get_the_differing_axes_appended(tmp_path):
    body = """
    axes:
      vision: [{label: Sig, family: siglip}]
      connector: [mlp2x_gelu, ln_mlp]
      seed: [0, 1]
    """
    grid = load_grid(grid_file(tmp_path, body))
    # recipe and llm aren't axes: they render the base config's recipe name and LLM family
    assert [v.name for v in grid.variants] == [
        "TinyLLaVA-base-Sig-llama-mlp2x_gelu-seed0", "TinyLLaVA-base-Sig-llama-mlp2x_gelu-seed1",
        "TinyLLaVA-base-Sig-llama-ln_mlp-seed0", "TinyLLaVA-base-Sig-llama-ln_mlp-seed1"]
    assert [v.config.seed for v in grid.variants] == [0, 1, 0, 1]
    assert [v.config.model.connector.name for v in grid.variants] == ["mlp2x_gelu"] * 2 + ["ln_mlp"] * 2


def test_custom_pattern_only_suffixes_what_it_leaves_out(tmp_path):
    body = """
    naming: "{vision}-{seed}"
    axes:
      vision: [{label: Sig, family: siglip}, {label: CLIP, family: clip}]
      seed: [0, 1]
      llm: [{label: Llama, family: llama}, {label: Phi, family: phi}]
    """
    names = [v.name for v in load_grid(grid_file(tmp_path, body)).variants]
    assert names[:4] == ["Sig-0-Llama", "Sig-0-Phi", "Sig-1-Llama", "Sig-1-Phi"]
    assert len(set(names)) == 8


def test_include_then_exclude(tmp_path):
    head = """
    include:
      - {vision: Sig}
      - {vision: CLIP, llm: Phi}
    exclude:
      - {recipe: share, llm: Phi}
    """
    grid = load_grid(grid_file(tmp_path, head=head))
    assert [v.name for v in grid.variants] == [
        "TinyLLaVA-base-Sig-Llama", "TinyLLaVA-base-Sig-Phi", "TinyLLaVA-base-CLIP-Phi", "TinyLLaVA-share-Sig-Llama"]
    # the grid's axes still list every label, filtered or not
    assert grid.axes["llm"] == ["Llama", "Phi"]


def test_dotted_path_axes_land_in_the_resolved_config(tmp_path):
    body = """
    axes:
      training.steps: [5, 7]
      stages.finetune.training.lr: [0.001, 0.0001]
      eval.benchmarks: [[pope], [gqa, mme]]
    """
    grid = load_grid(grid_file(tmp_path, body))
    assert len(grid.variants) == 8
    v = grid.variants[-1]
    assert v.axes == {"training.steps": "7", "stages.finetune.training.lr": "0.0001", "eval.benchmarks": "gqa+mme"}
    assert [s.training.steps for s in v.config.recipe.stages] == [7, 7]
    pretrain, finetune = v.config.recipe.stages
    assert finetune.training.lr == 1e-4 and pretrain.training.lr == 1e-3  # only the named stage changes
    assert v.config.eval.benchmarks == ["gqa", "mme"]
    assert [s.training.steps for s in grid.variants[0].config.recipe.stages] == [5, 5]


def test_inline_variant_and_data_connector_shorthands(tmp_path):
    body = """
    variant:
      training: {steps: 3}
    axes:
      data:
        - {label: short, splits: {captions: captions_short, instruct: instruct}}
        - {label: detailed, name: detailed, splits: {captions: captions_detailed, instruct: instruct}}
      connector: [{name: ln_mlp}, {label: shuffle, name: pixel_shuffle, options: {factor: 2}}]
    """
    grid = load_grid(grid_file(tmp_path, body))
    assert grid.axes == {"data": ["short", "detailed"], "connector": ["ln_mlp", "shuffle"]}
    v = grid.variants[3]
    assert v.config.data.name == "detailed" and v.config.data.splits["captions"] == "captions_detailed"
    assert v.config.model.connector.name == "pixel_shuffle" and v.config.model.connector.options == {"factor": 2}
    assert v.config.recipe.stages[0].training.steps == 3


def test_a_dotted_axis_of_mappings_the_world_mix(tmp_path):
    """{label: L, value: {...}} names a mapping as {label: L, ...} does; null is a value too."""
    body = """
    axes:
      data.synthetic.mix: [{label: default, value: null}, {label: yesno, value: {yes_no: 1}}, {label: vo, vqa: 2, ocr: 1}]
    """
    grid = load_grid(grid_file(tmp_path, body))
    assert grid.axes == {"data.synthetic.mix": ["default", "yesno", "vo"]}
    assert [v.config.data.synthetic.mix for v in grid.variants] == [None, {"yes_no": 1.0}, {"vqa": 2.0, "ocr": 1.0}]


def test_base_path_is_relative_to_the_grid_file(tmp_path):
    (tmp_path / "variants").mkdir()
    shutil.copy(SMOKE, tmp_path / "variants" / "smoke.yaml")
    path = write(tmp_path, "base: ../variants/smoke.yaml\naxes:\n  seed: [3]\n", name="grids/mine.yaml")
    grid = load_grid(path)
    assert grid.name == "mine"  # no name: the file's stem
    assert grid.source == str(path)
    assert [v.name for v in grid.variants] == ["TinyLLaVA-base-siglip-llama"]
    assert grid.variants[0].config.seed == 3 and grid.variants[0].config.recipe.stages[0].training.steps == 30


# ---- single variants, load_any, select ----

def test_single_variant_grid_is_named_after_the_config():
    grid = single_variant_grid(SMOKE)
    assert grid.axes == {} and len(grid.variants) == 1
    assert grid.name == grid.variants[0].name == grid.variants[0].config.name == "smoke-base-siglip-llama"
    assert grid.variants[0].axes == {}


def test_load_any_tells_grids_from_variants(tmp_path):
    assert load_any(SMOKE).variants[0].name == "smoke-base-siglip-llama"
    assert len(load_any(grid_file(tmp_path)).variants) == 8


def test_select_by_name_and_an_unknown_name(tmp_path):
    grid = load_grid(grid_file(tmp_path))
    one = select(grid, "TinyLLaVA-share-Sig-Phi")
    assert [v.name for v in one.variants] == ["TinyLLaVA-share-Sig-Phi"]
    assert one.name == grid.name and one.variants[0].config.recipe.name == "share"
    with pytest.raises(ConfigError) as err:
        select(grid, "TinyLLaVA-share-Sig-Phy")
    (field, msg), = err.value.problems
    assert field == "variant" and "'TinyLLaVA-share-Sig-Phy'" in msg
    assert "TinyLLaVA-base-Sig-Llama" in msg and "TinyLLaVA-share-CLIP-Phi" in msg


# ---- errors ----

def test_problems_of_every_variant_at_once_each_naming_the_variant(tmp_path):
    body = """
    axes:
      recipe: [base, share]
      vision:
        - {label: Sig, family: siglip}
        - {label: CLIP, family: clip, feature_select: bogus}
    """
    path = grid_file(tmp_path, body)
    err = grid_error(path)
    # the same problem, from the same line, in two variants: one line naming both
    key = "[TinyLLaVA-base-CLIP-llama, TinyLLaVA-share-CLIP-llama] model.vision.feature_select"
    assert [f for f, _ in err.problems] == [key]
    assert "bogus" in err.problems[0][1]
    # it points at the axis value that set it
    line = line_of(path, "feature_select: bogus")
    assert err.where[key] == f"{path}:{line}"
    assert f"grid.yaml:{line}" in str(err)


def test_a_value_that_fails_for_one_combination_only(tmp_path):
    # a stage override only makes sense for share (the only recipe with share_pretrain); the value is bad there too
    body = """
    axes:
      recipe: [base, share]
      stages.share_pretrain.vision: [{label: neg, mode: partial, from_layer: -1}]
    """
    err = grid_error(grid_file(tmp_path, body))
    fields = [f for f, _ in err.problems]
    assert fields[0] == "[TinyLLaVA-base-siglip-llama] stages.share_pretrain"
    assert "no stage 'share_pretrain'" in err.problems[0][1]
    assert fields[1] == "[TinyLLaVA-share-siglip-llama] stages.share_pretrain.vision.from_layer"
    assert len(fields) == 2


def test_unknown_dotted_path_is_reported_for_every_variant(tmp_path):
    err = grid_error(grid_file(tmp_path, "axes:\n  seed: [0, 1]\n  training.stepz: [1]\n"))
    # two variants × two stages, one line naming them all
    assert err.problems == [("[TinyLLaVA-base-siglip-llama-seed0, TinyLLaVA-base-siglip-llama-seed1] training.stepz",
                             "(stages pretrain, finetune) unknown field (did you mean steps?)")]


def test_base_file_errors_keep_their_file_and_line(tmp_path):
    base = write(tmp_path, "recipe: base\ntraining: {steps: 2}\nseed: abc\n", name="base.yaml")
    path = write(tmp_path, "base: base.yaml\naxes:\n  llm: [llama, phi]\n")
    err = grid_error(path)
    key = "[TinyLLaVA-base-siglip-llama, TinyLLaVA-base-siglip-phi] seed"
    assert [f for f, _ in err.problems] == [key]
    assert err.where[key] == f"{base.resolve()}:3"


def test_structural_problems_are_all_reported_with_lines(tmp_path):
    body = """
    axes:
      vision: []
      llm: [{label: Llama, family: llama}, {label: Llama, family: phi}]
      recipe: [base, share]
      connector: [{options: {factor: 2}}]
    exclude:
      - {recipe: shar}
      - {vison: Sig}
    naming: "{recipe}-{visoin}"
    colour: red
    """
    path = grid_file(tmp_path, body)
    probs = dict(grid_error(path).problems)
    assert probs["axes.vision"] == "empty list"
    assert "duplicate label 'Llama'" in probs["axes.llm.1"]
    assert "needs a `label`" in probs["axes.connector.0"]
    assert probs["exclude.0.recipe"] == "unknown label 'shar'; labels: base, share"
    assert probs["exclude.1.vison"].startswith("unknown axis; axes: ")
    assert "{visoin}" in probs["naming"]
    assert "unknown grid field" in probs["colour"]
    assert f"grid.yaml:{line_of(path, 'vision: []')}" in str(grid_error(path))


def test_unknown_label_in_exclude(tmp_path):
    err = grid_error(grid_file(tmp_path, head="exclude:\n  - {recipe: share, llm: Phy}\n"))
    assert err.problems == [("exclude.0.llm", "unknown label 'Phy'; labels: Llama, Phi")]


def test_zero_variants_after_filtering_is_an_error(tmp_path):
    err = grid_error(grid_file(tmp_path, head="exclude:\n  - {recipe: [base, share]}\n"))
    assert err.problems == [("exclude", "every combination is excluded")]


def test_missing_base_file_names_the_grid_field(tmp_path):
    err = grid_error(write(tmp_path, "base: nowhere.yaml\naxes:\n  seed: [0]\n"))
    assert [f for f, _ in err.problems] == ["base"] and "nowhere.yaml" in err.problems[0][1]


def test_a_block_error_caused_by_an_axis_points_at_the_axis(tmp_path):
    # smoke: micro_batch 2 × workers 2 = 4, so global_batch 6 breaks the whole training block
    path = grid_file(tmp_path, "axes:\n  training.global_batch:\n    - 8\n    - 6\n")
    err = grid_error(path)
    assert {f.split("] ")[0] for f, _ in err.problems} == {"[TinyLLaVA-base-siglip-llama-6"}
    key = "[TinyLLaVA-base-siglip-llama-6] training"
    assert "(stage pretrain) global_batch 6" in dict(err.problems)[key]
    assert err.where[key] == f"{path}:{line_of(path, '- 6')}"


def test_variants_remember_where_their_fields_were_written(tmp_path):
    """Errors found after loading (registries, shapes, resources) point at the axis value too."""
    path = grid_file(tmp_path)
    grid = load_grid(path)
    clip = next(v for v in grid.variants if v.axes["vision"] == "CLIP")
    assert clip.where["model.vision"] == f"{path}:{line_of(path, 'label: CLIP')}"
    assert clip.where["training.steps"].startswith(f"{SMOKE}:")


def test_set_on_a_grid_changes_every_variant_and_is_located(tmp_path):
    from vlmsweep.config.grid import with_sets
    from vlmsweep.config.load import parse_sets

    grid = with_sets(load_grid(grid_file(tmp_path)), parse_sets(["seed=5"]))
    assert {v.config.seed for v in grid.variants} == {5}
    assert all(v.where["seed"] == "--set seed=5" for v in grid.variants)
    with pytest.raises(ConfigError) as err:
        with_sets(grid, parse_sets(["seed.x=1"]))
    assert err.value.problems[0][0] == "seed" and "not a mapping" in err.value.problems[0][1]
