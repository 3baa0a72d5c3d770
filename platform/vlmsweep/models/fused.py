"""Fused vision encoders, as Prismatic fuses DINOv2 and SigLIP: `model.vision` is a list.

Each encoder sees the same image through its own processor (its own normalisation, its own
aspect rule) and runs up to its own feature layer; their patch features are concatenated per
patch, so the connector sees one token per patch of width hidden₁ + hidden₂ + …

The grids must match: vlmsweep requires it rather than resampling, as Prismatic does (its
DINOv2 + SigLIP pairs are ViT/14 at the same resolution: 16×16 at 224 px, 27×27 at 384 px).
Resampling one grid onto another would mix neighbouring patches of one encoder only, and
would be a modelling choice of its own. The input sizes must match too: the pixels of all
encoders travel as one tensor, stacked along channels (vision.ImagePipeline).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vlmsweep.config.errors import ConfigError
from vlmsweep.config.schema import ModelConfig, VisionConfig

from .vision import VisionGeometry, VisionTower, vision_geometry


def fused_geometry(encoders: list[tuple[str, VisionConfig]], preset_root: str | Path) -> VisionGeometry:
    """The geometry the connector sees; ConfigError naming the encoder whose grid or size differs."""
    return _joined(encoders, [vision_geometry(cfg, preset_root) for _, cfg in encoders])


def _joined(encoders: list[tuple[str, VisionConfig]], each: list[VisionGeometry]) -> VisionGeometry:
    geometries = [(field, g) for (field, _), g in zip(encoders, each)]
    problems = []
    for field, cfg in encoders:
        if cfg.feature_select == "cls_patch":
            problems.append((f"{field}.feature_select", "fused encoders are concatenated per patch: "
                                                        "a CLS token has no patch to join; allowed: patch"))
    first_field, first = geometries[0]
    for field, g in geometries[1:]:
        if (g.grid, g.image_size) != (first.grid, first.image_size):
            problems.append((field, f"its grid is {g.grid}×{g.grid} patches of a {g.image_size} px image, "
                                    f"{first_field}'s {first.grid}×{first.grid} of {first.image_size} px: fused "
                                    "encoders need the same grid and input size (vlmsweep does not resample)"))
    if problems:
        raise ConfigError(problems)
    return VisionGeometry(sum(g.hidden_size for _, g in geometries), first.num_tokens, first.grid,
                          min(g.depth for _, g in geometries), min(g.full_depth for _, g in geometries),
                          first.image_size)


def model_geometry(cfg: ModelConfig, preset_root: str | Path) -> VisionGeometry:
    """What the connector sees of `cfg.vision`: one encoder's geometry or the fused one."""
    if cfg.fused:
        return fused_geometry(cfg.encoders(), preset_root)
    return vision_geometry(cfg.vision, preset_root)


class FusedVisionTower(nn.Module):
    """Several VisionTowers run on one image; features concatenated along the hidden axis.

    `model` holds the encoders' transformers models (what tuning and stage outputs treat as the
    vision component: its state dict is every encoder's, prefixed by its index); the towers'
    own settings (feature layer, prefix tokens) stay in plain VisionTower objects that share
    those very modules.
    """

    def __init__(self, encoders: list[VisionConfig], preset_root: str | Path):
        super().__init__()
        towers = [VisionTower(c, preset_root) for c in encoders]
        # from the towers' own geometries: reading configs and processors again would only cost start-up
        self.geometry = _joined([(f"model.vision.{i}", c) for i, c in enumerate(encoders)], [t.geometry for t in towers])
        self.model = nn.ModuleList([t.model for t in towers])
        # a list attribute is not registered as submodules, so every weight has one name: model.<i>.…
        self._towers = towers

    def encoders(self) -> list[nn.Module]:
        return list(self.model)

    def unused_parameters(self) -> list[nn.Parameter]:
        return [p for t in self._towers for p in t.unused_parameters()]

    def blank(self, device, dtype) -> torch.Tensor:
        size = self.geometry.image_size
        return torch.zeros(1, 3 * len(self._towers), size, size, device=device, dtype=dtype)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # channels 3i..3i+2 are encoder i's pixels (ImagePipeline)
        features = [t(pixel_values[:, 3 * i: 3 * i + 3]) for i, t in enumerate(self._towers)]
        return torch.cat(features, dim=-1)


def build_vision_tower(cfg: ModelConfig, preset_root: str | Path) -> VisionTower | FusedVisionTower:
    if cfg.fused:
        return FusedVisionTower(cfg.vision, preset_root)
    return VisionTower(cfg.vision, preset_root)
