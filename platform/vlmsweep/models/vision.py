"""Vision towers: CLIP, SigLIP and DINOv2 through transformers' own classes.

A family entry says which transformers classes to use, how many prefix (CLS) tokens the
encoder emits, which modules are never used for LLaVA-style features (so never trained),
and a tiny preset config. Everything — presets included — loads through
`from_pretrained(directory or Hub name)`: a preset is first written to disk with
save_pretrained, so the tiny path and the real path are one code path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import (AutoImageProcessor, CLIPVisionConfig, CLIPVisionModel, Dinov2Config,
                          Dinov2Model, SiglipVisionConfig, SiglipVisionModel)
from transformers.models.bit import BitImageProcessorPil
from transformers.models.clip import CLIPImageProcessorPil
from transformers.models.siglip import SiglipImageProcessorPil

from vlmsweep.config.errors import ConfigError, lookup
from vlmsweep.config.schema import VisionConfig

from .presets import materialize, preset_dir, save_model, zoo_checkpoint
from .stack import block_stack


@dataclass(frozen=True)
class VisionFamily:
    model_class: type
    model_types: tuple[str, ...]
    # tokens before the patch grid in hidden states (CLS); 0 for SigLIP
    prefix_tokens: int
    # modules (or parameters) that LLaVA-style features never pass through
    unused_modules: tuple[str, ...]
    tiny_config: Callable[[], object]
    tiny_processor: Callable[[int], object]


# Tiny presets: 32 px images in 8 px patches = a 4x4 grid, 4 layers of width 32.
_TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
             image_size=32, patch_size=8)
_MEAN, _STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]

VISION_FAMILIES: dict[str, VisionFamily] = {
    "clip": VisionFamily(
        CLIPVisionModel, ("clip_vision_model", "clip"), 1, ("post_layernorm",),
        lambda: CLIPVisionConfig(**_TINY, projection_dim=32),
        lambda px: CLIPImageProcessorPil(size={"shortest_edge": px}, crop_size={"height": px, "width": px})),
    "siglip": VisionFamily(
        SiglipVisionModel, ("siglip_vision_model", "siglip"), 0,
        ("post_layernorm", "head"),
        lambda: SiglipVisionConfig(**_TINY, vision_use_head=False),
        lambda px: SiglipImageProcessorPil(size={"height": px, "width": px}, image_mean=_MEAN, image_std=_STD)),
    "dinov2": VisionFamily(
        # the mask token only serves masked-image pretraining
        Dinov2Model, ("dinov2",), 1, ("layernorm", "embeddings.mask_token"),
        lambda: Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, mlp_ratio=2,
                             image_size=32, patch_size=8),
        lambda px: BitImageProcessorPil(size={"shortest_edge": px}, crop_size={"height": px, "width": px})),
}


def get_vision_family(name: str) -> VisionFamily:
    return lookup(VISION_FAMILIES, "vision family", name, field="model.vision.family")


def _save_preset(family_name: str, out: Path) -> None:
    family = get_vision_family(family_name)
    config = family.tiny_config()
    torch.manual_seed(0)  # a preset is the same weights on every machine
    save_model(family.model_class(config), out)
    family.tiny_processor(config.image_size).save_pretrained(out)


def resolve_checkpoint(cfg: VisionConfig, preset_root: str | Path) -> str:
    """The directory or Hub name to load: "tiny" names the family's preset directory,
    "zoo:<name>" a pretrained part built by `vlmsweep zoo build`."""
    if cfg.checkpoint == "tiny":
        return str(materialize(preset_dir(preset_root, "vision", cfg.family), lambda d: _save_preset(cfg.family, d)))
    return zoo_checkpoint(cfg.checkpoint, preset_root, "model.vision.checkpoint") or cfg.checkpoint


def feature_depth(num_layers: int, feature_layer: int) -> int:
    """How many encoder layers run to produce hidden_states[feature_layer] (index 0 = embeddings)."""
    index = feature_layer if feature_layer >= 0 else num_layers + 1 + feature_layer
    if not 1 <= index <= num_layers:
        raise ConfigError([("model.vision.feature_layer",
                            f"{feature_layer} is outside an encoder of {num_layers} layers "
                            f"(allowed: 1..{num_layers} or -{num_layers}..-1)")])
    return index


def pad_to_square(image: Image.Image, mean: list[float]) -> Image.Image:
    """LLaVA-1.5's 'pad' aspect: centre the image on a square of the processor's mean colour."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), tuple(int(255 * m) for m in mean))
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def vision_config(cfg: VisionConfig, preset_root: str | Path):
    """The encoder's transformers config (no weights): enough to validate and plan."""
    family = get_vision_family(cfg.family)
    config_class = family.model_class.config_class
    # a full CLIP/SigLIP checkpoint holds text and vision configs; the vision class picks its own
    config = config_class.from_pretrained(resolve_checkpoint(cfg, preset_root), trust_remote_code=cfg.trust_remote_code)
    if config.model_type not in family.model_types:
        raise ConfigError([("model.vision.checkpoint", f"{cfg.checkpoint!r} is a {config.model_type!r} model, "
                                                       f"not model.vision.family {cfg.family!r}")])
    return config


@dataclass(frozen=True)
class VisionGeometry:
    hidden_size: int
    num_tokens: int      # feature tokens per image
    grid: int            # patches per side
    depth: int           # encoder layers that run (up to the feature layer)
    full_depth: int


def vision_geometry(cfg: VisionConfig, preset_root: str | Path) -> VisionGeometry:
    config = vision_config(cfg, preset_root)
    family = get_vision_family(cfg.family)
    grid = config.image_size // config.patch_size
    prefix = family.prefix_tokens if cfg.feature_select == "cls_patch" else 0
    return VisionGeometry(config.hidden_size, grid * grid + prefix, grid,
                          feature_depth(config.num_hidden_layers, cfg.feature_layer), config.num_hidden_layers)


def load_image_processor(cfg: VisionConfig, preset_root: str | Path):
    return AutoImageProcessor.from_pretrained(resolve_checkpoint(cfg, preset_root),
                                              trust_remote_code=cfg.trust_remote_code)


def preprocess_images(processor, images: list[Image.Image], image_aspect: str) -> np.ndarray:
    """PIL images → float32 pixels [n, 3, H, W] with the model's own processor."""
    images = [im.convert("RGB") for im in images]
    if image_aspect == "pad":
        images = [pad_to_square(im, processor.image_mean) for im in images]
    return np.asarray(processor(images=images, return_tensors="np")["pixel_values"], dtype=np.float32)


def unused_parameters(model: nn.Module, family: VisionFamily) -> list[nn.Parameter]:
    """Parameters of modules the features never pass through (absent ones are skipped:
    e.g. a SigLIP saved without its pooling head)."""
    out = []
    for name in family.unused_modules:
        try:
            out.extend(model.get_submodule(name).parameters())
        except AttributeError:
            try:  # a bare parameter, e.g. DINOv2's mask token
                out.append(model.get_parameter(name))
            except AttributeError:
                continue
    return out


class VisionTower(nn.Module):
    """Wraps an encoder so it returns [n_images, tokens, hidden] features from `feature_layer`.

    Layers above the feature layer are dropped at load time: their output is never used, so
    running them would only cost time, and their parameters would never get a gradient.
    """

    def __init__(self, cfg: VisionConfig, preset_root: str | Path):
        super().__init__()
        self.family = get_vision_family(cfg.family)
        self.geometry = vision_geometry(cfg, preset_root)
        self.model = self.family.model_class.from_pretrained(resolve_checkpoint(cfg, preset_root),
                                                             trust_remote_code=cfg.trust_remote_code)
        _, stack = block_stack(self.model)
        del stack[self.geometry.depth:]
        for p in unused_parameters(self.model, self.family):
            p.requires_grad_(False)
        self.keep_prefix = cfg.feature_select == "cls_patch"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=pixel_values.to(dtype), output_hidden_states=True)
        features = out.hidden_states[self.geometry.depth]
        if not self.keep_prefix:
            features = features[:, self.family.prefix_tokens:]
        return features
