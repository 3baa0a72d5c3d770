"""Fused vision encoders (Prismatic's DINOv2 + SigLIP): `model.vision` as a list.

Each encoder keeps its own processor and its own layers; features join per patch; grids must
match; tuning applies to each encoder; the config, the grid and the stage id cover every
encoder. Packing and generation with a fused tower are in test_packing / test_generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import SiglipVisionConfig, SiglipVisionModel
from transformers.models.siglip import SiglipImageProcessorPil

from _tiny import CONVERSATIONS, Tiny, model_config, random_image
from vlmsweep.config.errors import ConfigError
from vlmsweep.config.grid import load_grid
from vlmsweep.config.load import resolve
from vlmsweep.config.schema import ModelConfig, VisionConfig
from vlmsweep.data.packing import Row, collate
from vlmsweep.models.check import check_variant
from vlmsweep.models.fused import model_geometry
from vlmsweep.models.tuning import apply_tuning
from vlmsweep.models.vision import ImagePipeline, load_image_processor, preprocess_images, vision_geometry
from vlmsweep.train.stage import stage_id

FUSED = [{"family": "dinov2"}, {"family": "siglip"}]


def variant(vision, vision_tune: dict | None = None) -> object:
    return resolve({"name": "v", "model": {"vision": vision, "llm": {"family": "llama"}}, "recipe": "single_stage",
                    "training": {"steps": 1, "global_batch": 2, "micro_batch": 2},
                    "stages": {"finetune": {"vision": vision_tune or {"mode": "frozen"}}}})


def test_a_list_of_one_is_refused_and_errors_name_the_encoder(tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve({"name": "v", "model": {"vision": [{"family": "clip"}]}})
    assert err.value.problems[0][0] == "model.vision" and "at least two" in err.value.problems[0][1]
    with pytest.raises(ConfigError) as err:
        resolve({"name": "v", "model": {"vision": [{"family": "clip"}, {"family": "siglip", "feature_layr": -2}]}})
    assert err.value.problems == [("model.vision.1.feature_layr", "unknown field (did you mean feature_layer?)")]


def test_the_pipeline_stacks_each_encoders_own_pixels(preset_root):
    cfg = model_config("dinov2+siglip")
    image = random_image(3, 24, 32)
    pixels = ImagePipeline.load(cfg.vision, preset_root)([image])
    assert pixels.shape == (1, 6, 32, 32)
    for i, encoder in enumerate(cfg.vision):   # DINOv2 normalises with ImageNet's statistics, SigLIP with 0.5
        own = preprocess_images(load_image_processor(encoder, preset_root), [image], encoder.image_aspect)
        np.testing.assert_array_equal(pixels[:, 3 * i:3 * i + 3], own)
    assert not np.allclose(pixels[:, :3], pixels[:, 3:])


def test_features_join_per_patch_and_gradients_reach_both_encoders(preset_root):
    cfg = variant(FUSED, {"mode": "full"})
    tiny = Tiny(preset_root, cfg.model)
    assert tiny.vlm.vision.geometry.hidden_size == 64 and tiny.vlm.image_tokens == 16   # 32 + 32 wide, 4×4 grid
    pixels = torch.from_numpy(tiny.images([random_image(1)]))
    alone = [t(pixels[:, 3 * i:3 * i + 3]) for i, t in enumerate(tiny.vlm.vision._towers)]
    torch.testing.assert_close(tiny.vlm.vision(pixels), torch.cat(alone, dim=-1), rtol=0, atol=0)

    apply_tuning(tiny.vlm, cfg.recipe.stages[0])
    batch = collate([Row(tiny.samples(CONVERSATIONS[:3]))], tiny.pad_id)
    tiny.vlm(batch.input_ids, batch.targets, batch.pixel_values, batch.position_ids, batch.attention_mask).backward()
    for encoder in tiny.vlm.vision.encoders():
        stack = encoder.encoder.layers if hasattr(encoder.encoder, "layers") else encoder.encoder.layer
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stack.parameters())
        # modules the features never pass through never train, in each encoder
        assert not any(p.requires_grad for n, p in encoder.named_parameters()
                       if n.startswith(("layernorm.", "post_layernorm.", "head.")) or n.endswith("mask_token"))


def test_partial_tuning_counts_layers_in_each_encoder(preset_root):
    cfg = variant(FUSED, {"mode": "partial", "from_layer": 2})
    tiny = Tiny(preset_root, cfg.model)
    apply_tuning(tiny.vlm, cfg.recipe.stages[0])
    dino, siglip = tiny.vlm.vision.encoders()
    assert [any(p.requires_grad for p in layer.parameters()) for layer in dino.encoder.layer] == [False, False, True]
    assert [any(p.requires_grad for p in layer.parameters()) for layer in siglip.encoder.layers] == [False, False, True]


def test_lora_on_fused_encoders_is_refused_before_anything_runs(preset_root):
    with pytest.raises(ConfigError) as err:
        check_variant(variant(FUSED, {"mode": "lora"}), preset_root)
    assert ("stages.finetune.vision.mode",) == tuple(f for f, m in err.value.problems if "fused" in m)


def _siglip_at(path, image_size: int) -> str:
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                         num_attention_heads=4, image_size=image_size, patch_size=8)).save_pretrained(path)
    SiglipImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(path)
    return str(path)


def test_grids_must_match_and_the_error_names_the_encoder_and_both_grids(preset_root, tmp_path):
    siglip48 = _siglip_at(tmp_path / "siglip48", 48)
    cfg = variant([{"family": "dinov2"}, {"family": "siglip", "checkpoint": siglip48}])
    with pytest.raises(ConfigError) as err:
        check_variant(cfg, preset_root)
    (field, message), = err.value.problems
    assert field == "model.vision.1"
    assert "6×6 patches of a 48 px image" in message and "4×4 of 32 px" in message
    # DINOv2 interpolates its position embeddings: fed 48 px it meets SigLIP's 6×6 grid
    cfg = variant([{"family": "dinov2", "image_size": 48}, {"family": "siglip", "checkpoint": siglip48}])
    assert check_variant(cfg, preset_root) == []
    geometry = model_geometry(cfg.model, preset_root)
    assert (geometry.grid, geometry.image_size, geometry.hidden_size) == (6, 48, 64)
    tiny = Tiny(preset_root, cfg.model)
    pixels = torch.from_numpy(tiny.images([random_image(2, 40, 56)]))
    assert pixels.shape == (1, 6, 48, 48) and tiny.vlm.vision(pixels).shape == (1, 36, 64)


def test_image_size_is_only_for_encoders_that_interpolate_positions(preset_root):
    with pytest.raises(ConfigError) as err:
        vision_geometry(VisionConfig(family="clip", image_size=48), preset_root)
    assert err.value.problems[0][0] == "model.vision.image_size"


def test_a_cls_token_has_no_patch_to_join(preset_root):
    with pytest.raises(ConfigError) as err:
        check_variant(variant([{"family": "dinov2", "feature_select": "cls_patch"}, {"family": "clip"}]), preset_root)
    assert [f for f, _ in err.value.problems] == ["model.vision.0.feature_select"]


def test_the_stage_id_covers_every_encoder_and_unset_image_size_leaves_ids_alone():
    one, fused = variant({"family": "dinov2"}), variant(FUSED)
    other = variant([{"family": "dinov2", "feature_layer": -3}, {"family": "siglip"}])
    assert len({stage_id(c, 0, "data") for c in (one, fused, other)}) == 3
    assert stage_id(one, 0, "data") == stage_id(variant({"family": "dinov2", "image_size": None}), 0, "data")
    assert stage_id(one, 0, "data") != stage_id(variant({"family": "dinov2", "image_size": 48}), 0, "data")


def test_a_grid_axis_value_lists_fused_encoders_and_is_labelled_by_them(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("""
name: enc
naming: "E-{vision}"
variant: {model: {llm: {family: llama}}, recipe: single_stage, training: {steps: 1, global_batch: 2, micro_batch: 2}}
axes:
  vision:
    - {label: Sig, family: siglip}
    - [{label: DINOv2, family: dinov2}, {family: siglip}]
""")
    variants = load_grid(grid).variants
    assert [v.name for v in variants] == ["E-Sig", "E-DINOv2+siglip"]
    assert [e.family for _, e in variants[1].config.model.encoders()] == ["dinov2", "siglip"]
    assert isinstance(variants[1].config.model, ModelConfig) and variants[1].config.model.fused


def test_a_fused_value_takes_its_papers_name_through_label_and_value(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("""
name: prism
naming: "prism-{vision}"
variant: {recipe: single_stage, training: {steps: 1, global_batch: 2, micro_batch: 2}}
axes:
  vision:
    - {label: dinosiglip, value: [{family: dinov2, image_sise: 48}, {family: siglip}]}
""")
    with pytest.raises(ConfigError) as err:
        load_grid(grid)
    (field, message), = err.value.problems
    assert field == "[prism-dinosiglip] model.vision.0.image_sise" and "did you mean image_size?" in message
    assert err.value.where[field].endswith("g.yaml:7")   # the axis value's line


def test_set_replaces_one_encoder_by_fused_ones_and_back():
    from vlmsweep.config.load import apply_sets

    raw = {"name": "v", "model": {"vision": {"family": "clip", "feature_layer": -1}}}
    fused, _ = apply_sets(raw, {}, [("model.vision", FUSED, "model.vision=[...]")])
    assert resolve(fused).model.fused
    one, _ = apply_sets(fused, {}, [("model.vision", {"family": "siglip"}, "model.vision={family: siglip}")])
    assert resolve(one).model.vision == VisionConfig(family="siglip")
