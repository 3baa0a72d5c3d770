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
from transformers import (AutoImageProcessor, CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model,
                          Dinov2WithRegistersConfig, Dinov2WithRegistersModel, SiglipVisionConfig,
                          SiglipVisionModel)
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.bit import BitImageProcessorPil
from transformers.models.clip import CLIPImageProcessorPil
from transformers.models.siglip import SiglipImageProcessorPil

from vlmsweep.config.errors import ConfigError, lookup
from vlmsweep.config.schema import VisionConfig

from .presets import materialize, preset_dir, save_model, seeded_init, zoo_checkpoint
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
    # The encoder interpolates its position embeddings to any input size, so the size it sees
    # is the processor's, not config.image_size (DINOv2's configs say 518, its processor crops 224).
    size_from_processor: bool = False


# Tiny presets: 32 px images in 8 px patches = a 4x4 grid, 4 layers of width 32.
_TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
             image_size=32, patch_size=8)
_MEAN, _STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def _dinov2_processor(px: int):
    # facebook/dinov2-* ship BitImageProcessor with ImageNet's mean / std (the class defaults to CLIP's)
    return BitImageProcessorPil(size={"shortest_edge": px}, crop_size={"height": px, "width": px},
                                image_mean=list(IMAGENET_DEFAULT_MEAN), image_std=list(IMAGENET_DEFAULT_STD))


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
        _dinov2_processor, size_from_processor=True),
    # DINOv2 with 4 register tokens after CLS (Darcet et al. 2024), Prismatic's DINOv2; its
    # features drop CLS and registers alike
    "dinov2_reg": VisionFamily(
        Dinov2WithRegistersModel, ("dinov2_with_registers",), 5, ("layernorm", "embeddings.mask_token"),
        lambda: Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, mlp_ratio=2,
                                          image_size=32, patch_size=8, num_register_tokens=4),
        _dinov2_processor, size_from_processor=True),
}


def get_vision_family(name: str) -> VisionFamily:
    return lookup(VISION_FAMILIES, "vision family", name, field="model.vision.family")


def _save_preset(family_name: str, out: Path) -> None:
    family = get_vision_family(family_name)
    config = family.tiny_config()
    save_model(seeded_init(lambda: family.model_class(config)), out)
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
    image_size: int      # pixels per side the encoder is fed


def vision_geometry(cfg: VisionConfig, preset_root: str | Path) -> VisionGeometry:
    config = vision_config(cfg, preset_root)
    family = get_vision_family(cfg.family)
    if cfg.image_size and not family.size_from_processor:
        raise ConfigError([("model.vision.image_size", f"family {cfg.family!r} has position embeddings for "
                                                       f"{config.image_size} px only; leave image_size unset")])
    size = processed_size(cfg, preset_root) if family.size_from_processor else config.image_size
    grid = size // config.patch_size
    prefix = family.prefix_tokens if cfg.feature_select == "cls_patch" else 0
    return VisionGeometry(config.hidden_size, grid * grid + prefix, grid,
                          feature_depth(config.num_hidden_layers, cfg.feature_layer), config.num_hidden_layers, size)


def load_image_processor(cfg: VisionConfig, preset_root: str | Path):
    processor = AutoImageProcessor.from_pretrained(resolve_checkpoint(cfg, preset_root),
                                                   trust_remote_code=cfg.trust_remote_code)
    if cfg.image_size:   # resize (and crop) to the asked size, whatever the processor's own rule
        n = cfg.image_size
        processor.size = {"shortest_edge": n} if getattr(processor.size, "shortest_edge", None) else {"height": n, "width": n}
        if getattr(processor, "crop_size", None):
            processor.crop_size = {"height": n, "width": n}
    return processor


def processed_size(cfg: VisionConfig, preset_root: str | Path) -> int:
    """The side of the square images the encoder's own processor produces, measured on one
    image: crop and resize settings vary by processor class, the output doesn't lie."""
    pixels = preprocess_images(load_image_processor(cfg, preset_root), [Image.new("RGB", (64, 64))], cfg.image_aspect)
    if pixels.shape[2] != pixels.shape[3]:
        raise ConfigError([("model.vision.checkpoint", f"{cfg.checkpoint!r}'s processor makes "
                                                       f"{pixels.shape[3]}×{pixels.shape[2]} images; square ones are needed")])
    return int(pixels.shape[2])


def preprocess_images(processor, images: list[Image.Image], image_aspect: str) -> np.ndarray:
    """PIL images → float32 pixels [n, 3, H, W] with the model's own processor."""
    images = [im.convert("RGB") for im in images]
    if image_aspect == "pad":
        images = [pad_to_square(im, processor.image_mean) for im in images]
    return np.asarray(processor(images=images, return_tensors="np")["pixel_values"], dtype=np.float32)


class ImagePipeline:
    """Images → the pixels a vision tower takes: each encoder's own processor and aspect rule,
    and for fused encoders their pixels stacked along channels ([n, 3 × encoders, H, W]: the
    encoders share one input size, models/fused.py)."""

    def __init__(self, parts: list[tuple[object, str]]):
        self.parts = parts   # (processor, image_aspect) per encoder

    @classmethod
    def load(cls, vision: VisionConfig | list[VisionConfig], preset_root: str | Path) -> "ImagePipeline":
        encoders = vision if isinstance(vision, list) else [vision]
        return cls([(load_image_processor(v, preset_root), v.image_aspect) for v in encoders])

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        pixels = [preprocess_images(processor, images, aspect) for processor, aspect in self.parts]
        return pixels[0] if len(pixels) == 1 else np.concatenate(pixels, axis=1)


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

    def encoders(self) -> list[nn.Module]:
        return [self.model]

    def unused_parameters(self) -> list[nn.Parameter]:
        model = self.model.get_base_model() if hasattr(self.model, "peft_config") else self.model
        return unused_parameters(model, self.family)

    def blank(self, device, dtype) -> torch.Tensor:
        """One all-zero image of the input size (keeps the tower in the graph of a text-only batch)."""
        size = self.geometry.image_size
        return torch.zeros(1, 3, size, size, device=device, dtype=dtype)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=pixel_values.to(dtype), output_hidden_states=True)
        features = out.hidden_states[self.geometry.depth]
        if not self.keep_prefix:
            features = features[:, self.family.prefix_tokens:]
        return features
