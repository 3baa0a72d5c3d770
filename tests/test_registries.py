"""Registries: every vision × LLM family pair builds from on-disk presets and trains on a real
tokenized batch; presets load by path; the feature layer and CLS selection shape the tower;
unknown names are refused with the allowed names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _tiny import CONVERSATIONS, Tiny, model_config
from vlmsweep.config.errors import ConfigError, UnknownNameError
from vlmsweep.config.load import resolve
from vlmsweep.config.schema import LLMConfig, VisionConfig
from vlmsweep.data.packing import collate, pack
from vlmsweep.models import llm as llm_module
from vlmsweep.models import vision as vision_module
from vlmsweep.models.check import check_variant
from vlmsweep.models.connectors import CONNECTORS, build_connector
from vlmsweep.models.llm import LLM_FAMILIES, load_llm, load_tokenizer
from vlmsweep.models.presets import preset_dir
from vlmsweep.models.stack import block_stack
from vlmsweep.models.templates import TEMPLATES, get_template
from vlmsweep.models.vision import VISION_FAMILIES, VisionTower
from vlmsweep.models.vlm import IMAGE_TOKEN_ID, build_vlm

VISION = sorted(VISION_FAMILIES)
LLMS = sorted(LLM_FAMILIES)


def test_registries_hold_exactly_the_documented_families():
    assert set(VISION_FAMILIES) == {"clip", "siglip", "dinov2", "dinov2_reg"}
    assert set(LLM_FAMILIES) == {"llama", "stablelm", "phi", "gemma", "qwen2", "mistral"}


@pytest.mark.parametrize("llm", LLMS)
@pytest.mark.parametrize("vision", VISION)
def test_family_pair_builds_and_trains_on_tokenized_image_and_text_samples(preset_root, vision, llm):
    tiny = Tiny(preset_root, model_config(vision, llm))
    vlm = tiny.vlm
    with_image = tiny.sample(0, *CONVERSATIONS[0])   # one image
    text_only = tiny.sample(1, *CONVERSATIONS[1])    # no image
    assert len(with_image.pixel_values) == 1 and len(text_only.pixel_values) == 0

    rows = list(pack([with_image, text_only], max_length=4096, max_images=4))
    assert len(rows) == 1 and len(rows[0].samples) == 2
    batch = collate(rows, tiny.pad_id)
    assert int((batch.input_ids == IMAGE_TOKEN_ID).sum()) == vlm.image_tokens == 16
    assert batch.pixel_values.shape == (1, 3, 32, 32)
    assert batch.target_tokens > 0

    loss = vlm(batch.input_ids, batch.targets, batch.pixel_values, batch.position_ids, batch.attention_mask)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # a freshly initialised LM predicts roughly uniformly over the vocabulary
    assert 0.5 * np.log(len(tiny.tokenizer)) < loss.item() < 2 * np.log(len(tiny.tokenizer))
    loss.backward()
    for component, module in (("connector", vlm.connector), ("llm", vlm.llm)):
        for name, p in module.named_parameters():
            assert p.grad is not None, f"{component}.{name} got no gradient"
            assert p.grad.abs().sum() > 0, f"{component}.{name} got an all-zero gradient"
            assert torch.isfinite(p.grad).all(), f"{component}.{name} has a non-finite gradient"


@pytest.mark.parametrize("family", LLMS)
def test_llm_preset_is_saved_on_disk_and_loads_by_path_like_a_hub_name(preset_root, family, monkeypatch):
    from_tiny = load_llm(LLMConfig(family=family, checkpoint="tiny"), preset_root)
    directory = preset_dir(preset_root, "llm", family)
    assert (directory / "config.json").is_file()
    assert (directory / ".complete").is_file()
    assert any(directory.glob("*.safetensors"))
    assert (directory / "tokenizer.json").is_file()
    assert json.loads((directory / "config.json").read_text())["model_type"] == family

    # "tiny" and the directory go through the same from_pretrained call, with the directory
    seen = []
    real = llm_module.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(llm_module.AutoModelForCausalLM, "from_pretrained",
                        lambda path, **kw: seen.append(path) or real(path, **kw))
    again = load_llm(LLMConfig(family=family, checkpoint="tiny"), preset_root)
    by_path = load_llm(LLMConfig(family=family, checkpoint=str(directory)), preset_root)
    assert seen == [str(directory), str(directory)]

    for model in (again, by_path):
        a, b = from_tiny.state_dict(), model.state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    tok_tiny = load_tokenizer(LLMConfig(family=family), preset_root)
    tok_path = load_tokenizer(LLMConfig(family=family, checkpoint=str(directory)), preset_root)
    text = "USER: héllo <image> ASSISTANT: ok"
    assert tok_tiny(text)["input_ids"] == tok_path(text)["input_ids"]
    assert len(tok_tiny) == from_tiny.config.vocab_size


@pytest.mark.parametrize("family", VISION)
def test_vision_preset_is_saved_on_disk_and_loads_by_path(preset_root, family):
    from_tiny = VisionTower(VisionConfig(family=family), preset_root)
    directory = preset_dir(preset_root, "vision", family)
    assert (directory / "config.json").is_file()
    assert (directory / "preprocessor_config.json").is_file()
    by_path = VisionTower(VisionConfig(family=family, checkpoint=str(directory)), preset_root)
    a, b = from_tiny.state_dict(), by_path.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_preset_of_another_family_is_refused_by_path(preset_root):
    llama_dir = preset_dir(preset_root, "llm", "llama")
    load_tokenizer(LLMConfig(family="llama"), preset_root)  # make sure it exists
    with pytest.raises(ConfigError) as err:
        load_llm(LLMConfig(family="qwen2", checkpoint=str(llama_dir)), preset_root)
    assert err.value.problems[0][0] == "model.llm.checkpoint"
    assert "'llama'" in str(err.value) and "'qwen2'" in str(err.value)


@pytest.mark.parametrize("family", VISION)
@pytest.mark.parametrize("feature_layer, layers", [(-2, 3), (-1, 4), (1, 1), (3, 3)])
def test_vision_tower_keeps_only_layers_up_to_the_feature_layer(preset_root, family, feature_layer, layers):
    cfg = VisionConfig(family=family, feature_layer=feature_layer)
    tower = VisionTower(cfg, preset_root)
    _, stack = block_stack(tower.model)
    assert len(stack) == layers == tower.geometry.depth
    assert tower.geometry.full_depth == 4

    # the truncated tower gives exactly the full encoder's hidden_states[feature_layer]
    full = VISION_FAMILIES[family].model_class.from_pretrained(vision_module.resolve_checkpoint(cfg, preset_root))
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = full(pixel_values=pixels, output_hidden_states=True).hidden_states[feature_layer]
        got = tower(pixels)
    prefix = VISION_FAMILIES[family].prefix_tokens
    assert got.shape == (2, 16, 32)
    torch.testing.assert_close(got, expected[:, prefix:], rtol=0, atol=1e-6)


@pytest.mark.parametrize("feature_layer", [0, 5, -5])
def test_feature_layer_outside_the_encoder_is_a_config_error(preset_root, feature_layer):
    with pytest.raises(ConfigError) as err:
        VisionTower(VisionConfig(family="clip", feature_layer=feature_layer), preset_root)
    field, msg = err.value.problems[0]
    assert field == "model.vision.feature_layer"
    assert "4 layers" in msg


@pytest.mark.parametrize("family, patch, cls_patch", [("clip", 16, 17), ("dinov2", 16, 17), ("siglip", 16, 16)])
def test_cls_patch_adds_the_cls_token_only_where_the_family_has_one(preset_root, family, patch, cls_patch):
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    outs = {}
    for select, tokens in (("patch", patch), ("cls_patch", cls_patch)):
        tower = VisionTower(VisionConfig(family=family, feature_select=select), preset_root)
        assert tower.geometry.num_tokens == tokens
        with torch.no_grad():
            outs[select] = tower(pixels)
        assert outs[select].shape == (3, tokens, 32)
    # the patch tokens are the same either way; cls_patch only prepends the CLS token
    torch.testing.assert_close(outs["cls_patch"][:, -16:], outs["patch"], rtol=0, atol=0)


def test_cls_patch_changes_the_image_token_count_of_the_whole_vlm(preset_root):
    vlm = build_vlm(model_config("clip", "llama", feature_select="cls_patch"), preset_root)
    assert vlm.image_tokens == 17
    features = vlm.connector(vlm.vision(torch.zeros(1, 3, 32, 32)))
    assert features.shape == (1, 17, 64)


def _variant(model: dict):
    return resolve({"model": model, "recipe": "base", "training": {"steps": 1}})


def test_check_variant_rejects_cls_patch_for_siglip_and_accepts_it_for_clip(preset_root):
    with pytest.raises(ConfigError) as err:
        check_variant(_variant({"vision": {"family": "siglip", "feature_select": "cls_patch"}}), preset_root)
    assert [f for f, _ in err.value.problems] == ["model.vision.feature_select"]
    assert "no CLS token" in err.value.problems[0][1] and "allowed: patch" in err.value.problems[0][1]
    check_variant(_variant({"vision": {"family": "clip", "feature_select": "cls_patch"}}), preset_root)
    check_variant(_variant({"vision": {"family": "siglip", "feature_select": "patch"}}), preset_root)


def _assert_unknown(err: UnknownNameError, name: str, allowed, field: str):
    assert err.name == name
    assert err.allowed == sorted(allowed)
    assert err.problems[0][0] == field
    for allowed_name in allowed:
        assert allowed_name in str(err)
    assert isinstance(err, ConfigError)


def test_unknown_vision_family_lists_allowed_names(preset_root):
    with pytest.raises(UnknownNameError) as err:
        build_vlm(model_config("vit"), preset_root)
    _assert_unknown(err.value, "vit", VISION_FAMILIES, "model.vision.family")


def test_unknown_llm_family_lists_allowed_names(preset_root):
    with pytest.raises(UnknownNameError) as err:
        build_vlm(model_config("siglip", "gpt2"), preset_root)
    _assert_unknown(err.value, "gpt2", LLM_FAMILIES, "model.llm.family")


def test_unknown_connector_lists_allowed_names(preset_root):
    with pytest.raises(UnknownNameError) as err:
        build_vlm(model_config("siglip", "llama", connector="mlp9x_gelu"), preset_root)
    _assert_unknown(err.value, "mlp9x_gelu", CONNECTORS, "model.connector.name")
    with pytest.raises(UnknownNameError):
        build_connector("MLP2X_GELU", 32, 64, 16)  # exact names only, no case folding


def test_unknown_template_lists_allowed_names():
    with pytest.raises(UnknownNameError) as err:
        get_template("alpaca")
    _assert_unknown(err.value, "alpaca", TEMPLATES, "model.llm.template")


def test_check_variant_collects_every_unknown_name_at_once(preset_root):
    cfg = _variant({"vision": {"family": "vit"}, "llm": {"family": "gpt2", "template": "alpaca"},
                    "connector": {"name": "mlp9x_gelu"}})
    with pytest.raises(ConfigError) as err:
        check_variant(cfg, preset_root)
    fields = [f for f, _ in err.value.problems]
    assert fields == ["model.vision.family", "model.llm.family", "model.llm.template"]
    text = str(err.value)
    assert "allowed: clip, dinov2, dinov2_reg, siglip" in text
    assert "allowed: gemma, llama, mistral, phi, qwen2, stablelm" in text
