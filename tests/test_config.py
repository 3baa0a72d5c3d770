"""Config: every mistake is an error naming its field (and file:line for YAML), recipes carry
the paper numbers, `base:` inheritance and stage overrides merge as documented, and the
pre-flight check catches what only the model shapes reveal."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from vlmsweep.cli import main
from vlmsweep.config.errors import ConfigError, UnknownNameError
from vlmsweep.config.load import dump_resolved, load_variant, resolve
from vlmsweep.config.recipes import RECIPES
from vlmsweep.models.check import check_variant


def problems_of(raw: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as err:
        resolve(raw)
    return err.value.problems


def fields(problems) -> list[str]:
    return [f for f, _ in problems]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_variant(path)
    return err.value


# ---- schema errors name the field ----

def test_unknown_top_level_key_is_named_with_the_allowed_keys():
    probs = problems_of({"recipe": "base", "trainig": {"steps": 1}})
    assert fields(probs) == ["trainig"]
    assert "unknown field" in probs[0][1]
    for key in ("model", "data", "recipe", "training", "stages", "seed", "name"):
        assert key in probs[0][1]


def test_unknown_nested_key_is_named_by_its_full_path():
    probs = problems_of({"model": {"vision": {"famliy": "clip"}}, "training": {"steps": 1}})
    assert fields(probs) == ["model.vision.famliy"]
    assert "unknown field" in probs[0][1]


def test_bad_literal_names_the_field_the_allowed_values_and_the_input():
    probs = problems_of({"recipe": "base", "training": {"steps": 1, "zero_stage": 5}})
    # the top-level training block goes into every stage: one problem naming the stages it broke
    assert fields(probs) == ["training.zero_stage"]
    assert probs[0][1].startswith("(stages pretrain, finetune) ")
    assert "0, 1, 2 or 3" in probs[0][1] and "(got 5)" in probs[0][1]


@pytest.mark.parametrize("training, numbers", [
    ({"global_batch": 10, "micro_batch": 4}, "4 × 1 = 4"),
    ({"global_batch": 8, "micro_batch": 2, "workers": 3}, "2 × 3 = 6"),
])
def test_global_batch_must_be_a_multiple_of_micro_batch_times_workers(training, numbers):
    probs = problems_of({"recipe": "single_stage", "training": {"steps": 1, **training}})
    assert fields(probs) == ["training"]
    assert f"global_batch {training['global_batch']} is not a multiple" in probs[0][1]
    assert numbers in probs[0][1]


def test_grad_accum_follows_from_the_batch_sizes():
    cfg = resolve({"recipe": "single_stage", "training": {"steps": 1, "global_batch": 24, "micro_batch": 2,
                                                           "workers": 3}})
    assert cfg.recipe.stages[0].training.grad_accum == 4


def test_neither_steps_nor_epochs_is_an_error():
    probs = problems_of({"recipe": "single_stage", "training": {"epochs": None}})
    assert fields(probs) == ["training"]
    assert "set exactly one of steps or epochs" in probs[0][1]


def test_user_steps_replace_the_recipe_epochs():
    cfg = resolve({"recipe": "base", "training": {"steps": 7}})
    for stage in cfg.recipe.stages:
        assert (stage.training.steps, stage.training.epochs) == (7, None)


def test_stage_epochs_replace_top_level_steps_for_that_stage_only():
    cfg = resolve({"recipe": "base", "training": {"steps": 7}, "stages": {"finetune": {"training": {"epochs": 2}}}})
    pretrain, finetune = cfg.recipe.stages
    assert (pretrain.training.steps, pretrain.training.epochs) == (7, None)
    assert (finetune.training.steps, finetune.training.epochs) == (None, 2)


def test_steps_and_epochs_given_together_is_an_error():
    probs = problems_of({"recipe": "single_stage", "training": {"steps": 3, "epochs": 1}})
    assert "set exactly one of steps or epochs" in probs[0][1]


def test_precedence_recipe_then_training_then_stage():
    cfg = resolve({"recipe": "base", "training": {"steps": 2, "lr": 0.5, "global_batch": 8},
                   "stages": {"finetune": {"training": {"lr": 0.25}}}})
    pretrain, finetune = cfg.recipe.stages
    assert (pretrain.training.lr, finetune.training.lr) == (0.5, 0.25)
    assert pretrain.training.global_batch == finetune.training.global_batch == 8
    assert finetune.training.max_length == 3072  # untouched recipe default


def test_lora_options_with_mode_frozen_are_an_error():
    probs = problems_of({"recipe": "single_stage", "training": {"steps": 1},
                         "stages": {"finetune": {"llm": {"mode": "frozen", "lora": {"r": 4}}}}})
    assert fields(probs) == ["stages.finetune.llm"]
    assert "lora options given but mode is 'frozen'" in probs[0][1]


def test_partial_without_from_layer_is_an_error():
    probs = problems_of({"recipe": "single_stage", "training": {"steps": 1},
                         "stages": {"finetune": {"vision": {"mode": "partial"}}}})
    assert fields(probs) == ["stages.finetune.vision"]
    assert "needs from_layer" in probs[0][1]


def test_from_layer_outside_partial_mode_is_an_error():
    probs = problems_of({"recipe": "single_stage", "training": {"steps": 1},
                         "stages": {"finetune": {"llm": {"from_layer": 3}}}})
    assert fields(probs) == ["stages.finetune.llm"]
    assert "only used by mode 'partial'" in probs[0][1]


def test_lora_mode_gets_default_lora_options():
    cfg = resolve({"recipe": "single_stage", "training": {"steps": 1}, "stages": {"finetune": {"llm": {"mode": "lora"}}}})
    lora = cfg.recipe.stages[0].llm.lora
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (8, 16, 0.05, None)


def test_bf16_on_cpu_is_an_error_and_fine_with_a_gpu():
    probs = problems_of({"recipe": "single_stage", "training": {"steps": 1, "precision": "bf16"}})
    assert fields(probs) == ["training.precision"]  # the field to change, not its block
    assert "needs a GPU" in probs[0][1]
    cfg = resolve({"recipe": "single_stage", "training": {"steps": 1, "precision": "bf16", "gpus_per_worker": 1}})
    assert cfg.recipe.stages[0].training.precision == "bf16"


def test_stage_override_naming_a_stage_not_in_the_recipe_is_an_error():
    probs = problems_of({"recipe": "base", "training": {"steps": 1}, "stages": {"share_pretrain": {"seed": 1}}})
    assert fields(probs) == ["stages.share_pretrain"]
    assert "no stage 'share_pretrain' in recipe 'base'" in probs[0][1]
    assert "pretrain, finetune" in probs[0][1]


def test_unknown_recipe_lists_the_recipes():
    with pytest.raises(UnknownNameError) as err:
        resolve({"recipe": "llava2"})
    assert err.value.problems[0][0] == "recipe"
    assert err.value.allowed == sorted(RECIPES)


def test_stage_split_must_be_a_data_split():
    probs = problems_of({"recipe": "base", "training": {"steps": 1}, "data": {"splits": {"captions": "c"}}})
    assert "'instruct' is not a data split" in probs[0][1]


def test_several_problems_are_reported_together():
    probs = problems_of({"model": {"llm": {"famly": "x"}}, "seed": "zero",
                         "training": {"steps": 1, "schedule": "exp"}, "recipe": "single_stage"})
    assert set(fields(probs)) == {"model.llm.famly", "seed", "training.schedule"}


# ---- named recipes ----

@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_named_recipe_resolves_with_its_defaults(name):
    cfg = resolve({"recipe": name})
    assert cfg.recipe.name == name
    assert [s.name for s in cfg.recipe.stages] == [s["name"] for s in RECIPES[name]]
    for stage in cfg.recipe.stages:
        assert stage.training.epochs == 1 and stage.training.steps is None


def test_share_recipe_has_the_paper_numbers():
    pretrain, share, finetune = resolve({"recipe": "share"}).recipe.stages
    assert [pretrain.name, share.name, finetune.name] == ["pretrain", "share_pretrain", "finetune"]
    assert (pretrain.training.lr, pretrain.training.global_batch) == (1e-3, 256)
    assert (pretrain.vision.mode, pretrain.connector.mode, pretrain.llm.mode) == ("frozen", "full", "frozen")
    assert (pretrain.template, pretrain.split) == ("plain", "captions")
    assert share.training.lr == 2e-5
    assert (share.vision.mode, share.vision.from_layer) == ("partial", 12)
    assert (share.connector.mode, share.llm.mode, share.template) == ("full", "full", "plain")
    assert (finetune.training.lr, finetune.training.global_batch) == (2e-5, 128)
    assert (finetune.vision.mode, finetune.connector.mode, finetune.llm.mode) == ("frozen", "full", "full")
    assert (finetune.template, finetune.split) == ("chat", "instruct")


def test_lora_recipe_has_llava_lora_numbers():
    _, finetune = resolve({"recipe": "lora"}).recipe.stages
    assert finetune.llm.mode == "lora"
    assert (finetune.llm.lora.r, finetune.llm.lora.alpha) == (128, 256)
    assert finetune.training.lr == 2e-4 and finetune.connector.lr == 2e-5


def test_recipes_are_not_mutated_by_resolving():
    before = yaml.safe_dump(RECIPES)
    resolve({"recipe": "share", "training": {"steps": 3, "lr": 9.0}, "stages": {"finetune": {"llm": {"mode": "lora"}}}})
    assert yaml.safe_dump(RECIPES) == before


def test_resolved_config_dump_reloads_to_the_same_config():
    cfg = resolve({"recipe": "share", "training": {"steps": 3}, "model": {"llm": {"family": "qwen2"}}})
    again = resolve(yaml.safe_load(dump_resolved(cfg)))
    assert again == cfg


# ---- pre-flight check against the real (tiny) model shapes ----

def test_share_from_layer_past_the_tiny_vision_depth_names_the_field_and_depth(preset_root):
    cfg = resolve({"recipe": "share", "training": {"steps": 1}})
    with pytest.raises(ConfigError) as err:
        check_variant(cfg, preset_root)
    assert fields(err.value.problems) == ["stages.share_pretrain.vision.from_layer"]
    msg = err.value.problems[0][1]
    # 4 layers, feature_layer -2: layers 0..2 run
    assert "12 is past the vision's depth" in msg and "0..2" in msg
    ok = resolve({"recipe": "share", "training": {"steps": 1}, "stages": {"share_pretrain": {"vision": {"from_layer": 2}}}})
    check_variant(ok, preset_root)


def test_partial_llm_from_layer_past_its_depth(preset_root):
    cfg = resolve({"recipe": "single_stage", "training": {"steps": 1},
                   "stages": {"finetune": {"llm": {"mode": "partial", "from_layer": 2}}}})
    with pytest.raises(ConfigError) as err:
        check_variant(cfg, preset_root)
    assert fields(err.value.problems) == ["stages.finetune.llm.from_layer"]
    assert "0..1" in err.value.problems[0][1]


def test_qlora_without_a_gpu_is_refused(preset_root):
    cfg = resolve({"recipe": "single_stage", "training": {"steps": 1}, "stages": {"finetune": {"llm": {"mode": "qlora"}}}})
    with pytest.raises(ConfigError) as err:
        check_variant(cfg, preset_root)
    assert err.value.problems == [("stages.finetune.llm.mode", "qlora needs a GPU (training.gpus_per_worker > 0)")]


def test_qlora_on_the_vision_tower_and_under_zero3_is_refused(preset_root):
    cfg = resolve({"recipe": "single_stage", "training": {"steps": 1, "gpus_per_worker": 1, "zero_stage": 3},
                   "stages": {"finetune": {"vision": {"mode": "qlora"}}}})
    with pytest.raises(ConfigError) as err:
        check_variant(cfg, preset_root)
    msgs = [m for f, m in err.value.problems if f == "stages.finetune.vision.mode"]
    assert any("quantizes the LLM only" in m for m in msgs) and any("ZeRO-3" in m for m in msgs)


@pytest.mark.parametrize("mode", ["lora", "partial"])
def test_lora_or_partial_on_the_connector_is_refused(preset_root, mode):
    tune = {"mode": mode, **({"from_layer": 0} if mode == "partial" else {})}
    cfg = resolve({"recipe": "single_stage", "training": {"steps": 1}, "stages": {"finetune": {"connector": tune}}})
    with pytest.raises(ConfigError) as err:
        check_variant(cfg, preset_root)
    assert fields(err.value.problems) == ["stages.finetune.connector.mode"]
    assert "allowed for the connector: frozen, full" in err.value.problems[0][1]


def test_identity_connector_with_mismatched_dims_is_refused(preset_root):
    cfg = resolve({"recipe": "single_stage", "training": {"steps": 1}, "model": {"connector": {"name": "identity"}}})
    with pytest.raises(ConfigError) as err:
        check_variant(cfg, preset_root)
    assert fields(err.value.problems) == ["model.connector"]
    assert "vision_dim=32" in err.value.problems[0][1] and "llm_dim=64" in err.value.problems[0][1]


def test_a_stage_where_nothing_trains_is_refused(preset_root):
    cfg = resolve({"recipe": "single_stage", "training": {"steps": 1},
                   "stages": {"finetune": {"connector": {"mode": "frozen"}, "llm": {"mode": "frozen"}}}})
    with pytest.raises(ConfigError) as err:
        check_variant(cfg, preset_root)
    assert err.value.problems == [("stages.finetune", "nothing trains: every component is frozen")]


def test_check_collects_problems_from_several_stages_and_the_model(preset_root):
    cfg = resolve({"recipe": "share", "training": {"steps": 1}, "model": {"connector": {"name": "identity"}},
                   "stages": {"finetune": {"connector": {"mode": "lora"}}}})
    with pytest.raises(ConfigError) as err:
        check_variant(cfg, preset_root)
    assert fields(err.value.problems) == ["model.connector", "stages.share_pretrain.vision.from_layer",
                                          "stages.finetune.connector.mode"]


# ---- YAML files: file and line ----

VARIANT = """
name: yaml-test
model:
  vision: {family: clip}
  llm:
    family: llama
recipe: base
training:
  steps: 2
  global_batch: 8
  micro_batch: 2
stages:
  finetune:
    training:
      lr: 1.0e-3
seed: 0
"""


def test_valid_yaml_file_resolves(tmp_path):
    path = write(tmp_path, "ok.yaml", VARIANT)
    cfg = load_variant(path)
    assert cfg.name == "yaml-test" and cfg.model.vision.family == "clip"
    assert [s.training.steps for s in cfg.recipe.stages] == [2, 2]
    assert [s.training.lr for s in cfg.recipe.stages] == [1e-3, 1e-3]


LOCATED = [
    # (line to replace, replacement, field named, key whose line the message must give)
    ("seed: 0", "sed: 0", "sed", "sed:"),
    ("  llm:\n    family: llama", "  llm:\n    famly: llama", "model.llm.famly", "    famly:"),
    ("      lr: 1.0e-3", "      lr: -1", "stages.finetune.training.lr", "      lr:"),
    ("  finetune:", "  finetun:", "stages.finetun", "  finetun:"),
]

LOCATED_BLOCK = [
    # set in the top-level training block: the key's own line, the broken stage in the message
    pytest.param("  micro_batch: 2", "  micro_batch: 2\n  zero_stage: 5", "training.zero_stage",
                 "  zero_stage:", id="training.zero_stage"),
    # a whole-block problem: the deepest known ancestor is the `training:` key itself
    pytest.param("  global_batch: 8", "  global_batch: 9", "training", "training:", id="training.global_batch"),
    pytest.param("recipe: base", "recipe: basic", "recipe", "recipe:", id="recipe"),
]


def _line_of(path: Path, key_prefix: str) -> int:
    lines = path.read_text().splitlines()
    hits = [i + 1 for i, line in enumerate(lines) if line.startswith(key_prefix)]
    assert len(hits) == 1, (key_prefix, hits)
    return hits[0]


def _check_located(tmp_path, old, new, field, key):
    text = textwrap.dedent(VARIANT).lstrip("\n")
    assert old in text
    path = tmp_path / "variant.yaml"
    path.write_text(text.replace(old, new, 1))
    err = load_error(path)
    assert field in fields(err.problems)
    line = _line_of(path, key)
    message = str(err)
    entry = next(m for m in message.splitlines() if m.strip().startswith(field + ":"))
    assert entry.endswith(f"[{path}:{line}]"), entry
    assert str(path) in message.splitlines()[0]


@pytest.mark.parametrize("old, new, field, key", LOCATED, ids=[f for _, _, f, _ in LOCATED])
def test_yaml_errors_name_the_file_and_the_line_of_the_offending_key(tmp_path, old, new, field, key):
    _check_located(tmp_path, old, new, field, key)


@pytest.mark.parametrize("old, new, field, key", LOCATED_BLOCK)
def test_yaml_errors_in_training_block_and_recipe_name_give_the_key_line(tmp_path, old, new, field, key):
    _check_located(tmp_path, old, new, field, key)


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = write(tmp_path, "broken.yaml", "name: x\nmodel:\n  vision: {family: clip\nseed: 0\n")
    err = load_error(path)
    assert err.problems[0][0] == "yaml"
    assert f"{path}:" in str(err)


def test_missing_file_and_non_mapping_file_are_errors(tmp_path):
    err = load_error(tmp_path / "absent.yaml")
    assert "no such config file" in str(err)
    err = load_error(write(tmp_path, "list.yaml", "- a\n- b\n"))
    assert "must be a mapping" in str(err)


# ---- base: inheritance ----

def test_base_inheritance_changes_only_the_child_fields(tmp_path):
    parent = write(tmp_path, "parent.yaml", VARIANT)
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "sub", "child.yaml", """
        base: ../parent.yaml
        model:
          llm: {family: qwen2}
        """)
    grandchild = write(tmp_path, "grandchild.yaml", """
        base: sub/child.yaml
        training: {steps: 5}
        """)
    p, c, g = load_variant(parent), load_variant(child), load_variant(grandchild)
    assert c.model.llm.family == "qwen2"
    assert c.model_copy(update={"model": p.model.model_copy(update={"llm": p.model.llm})}) == p
    assert c.model.vision == p.model.vision and c.recipe == p.recipe and c.name == p.name
    assert g.model.llm.family == "qwen2" and g.model.vision.family == "clip"
    assert [s.training.steps for s in g.recipe.stages] == [5, 5]
    assert [s.training.global_batch for s in g.recipe.stages] == [8, 8]  # still the parent's


def test_error_in_an_inherited_field_points_at_the_parent_file(tmp_path):
    write(tmp_path, "parent.yaml", VARIANT.replace("seed: 0", "seed: 0\ncolour: blue"))
    child = write(tmp_path, "child.yaml", "base: parent.yaml\nseed: 3\n")
    err = load_error(child)
    assert fields(err.problems) == ["colour"]
    assert str(child) in str(err).splitlines()[0]
    assert str(err).splitlines()[1].endswith(f"[{tmp_path / 'parent.yaml'}:{_line_of(tmp_path / 'parent.yaml', 'colour:')}]")


def test_child_line_wins_over_parent_line_for_the_same_key(tmp_path):
    write(tmp_path, "parent.yaml", VARIANT)
    child = write(tmp_path, "child.yaml", "base: parent.yaml\n\n\nmodel:\n  vision:\n    family: clip\n    size: 3\n")
    err = load_error(child)
    assert fields(err.problems) == ["model.vision.size"]
    assert str(err).splitlines()[1].endswith(f"[{child}:7]")


# ---- CLI ----

def test_cli_check_returns_2_and_prints_the_field_on_a_bad_config(tmp_path, capsys):
    path = write(tmp_path, "bad.yaml", VARIANT.replace("family: llama", "famly: llama"))
    assert main(["check", str(path), "--work-dir", str(tmp_path / "work")]) == 2
    captured = capsys.readouterr()
    assert "model.llm.famly" in captured.err
    assert f"{path}:{_line_of(path, '    famly:')}" in captured.err
    assert captured.out == ""


def test_cli_check_reports_shape_problems_and_set_overrides(tmp_path, capsys):
    path = write(tmp_path, "share.yaml", VARIANT.replace("recipe: base", "recipe: share"))
    work = str(tmp_path / "work")
    assert main(["check", str(path), "--work-dir", work]) == 2
    assert "stages.share_pretrain.vision.from_layer" in capsys.readouterr().err
    ok = ["check", str(path), "--work-dir", work, "--set", "stages.share_pretrain.vision.from_layer=1"]
    assert main(ok) == 0
    assert "ok (3 stages)" in capsys.readouterr().out
    assert main([*ok, "--set", "training.zero_stage=5"]) == 2
    assert "zero_stage" in capsys.readouterr().err
    assert main([*ok, "--set", "training.steps"]) == 2
    assert "--set" in capsys.readouterr().err


# ---- --set, suggestions, bounds ----

def test_a_set_change_is_blamed_on_the_set_not_on_the_file(tmp_path):
    from vlmsweep.config.load import load_located, parse_sets

    path = write(tmp_path, "ok.yaml", VARIANT)
    with pytest.raises(ConfigError) as err:
        load_located(path, parse_sets(["stages.finetune.training.lr=-1"]))
    entry = str(err.value).splitlines()[1]
    assert entry.startswith("  stages.finetune.training.lr:") and entry.endswith("[--set stages.finetune.training.lr=-1]")
    cfg, where = load_located(path, parse_sets(["seed=7", "model.vision={family: siglip}"]))
    assert cfg.seed == 7 and cfg.model.vision.family == "siglip" and where["seed"] == "--set seed=7"


def test_unknown_names_suggest_the_nearest_one():
    err = UnknownNameError("connector", "mlp2x_gelo", ["linear", "mlp2x_gelu", "mlp3x_gelu"], "model.connector.name")
    assert "(did you mean mlp2x_gelu?)" in str(err) and "allowed: linear, mlp2x_gelu, mlp3x_gelu" in str(err)
    assert "did you mean" not in str(UnknownNameError("connector", "zzz", ["linear"]))


def test_yaml_bounds_and_duplicates_are_errors_not_crashes(tmp_path):
    from vlmsweep.config.load import MAX_DEPTH, parse_yaml

    with pytest.raises(ConfigError, match=f"nested deeper than {MAX_DEPTH}"):
        parse_yaml("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "x.yaml")
    laughs = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n" for a, b in zip("abcdef", "bcdefg"))
    with pytest.raises(ConfigError, match="aliases expand"):
        parse_yaml(laughs, "x.yaml")
    assert parse_yaml("base: &b {lr: 1}\nuse: *b\n", "x.yaml")[0] == {"base": {"lr": 1}, "use": {"lr": 1}}
    err = load_error(write(tmp_path, "dup.yaml", "seed: 1\nmodel: {}\nseed: 2\n"))
    assert err.problems[0][0] == "seed" and "dup.yaml:1" in err.problems[0][1] and "dup.yaml:3" in err.problems[0][1]
