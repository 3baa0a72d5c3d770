"""Find a model's stack of transformer blocks, whatever the family calls it."""

from __future__ import annotations

from torch import nn


def block_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList holding the most parameters: `encoder.layers` for CLIP and SigLIP,
    `encoder.layer` for DINOv2, `model.layers` for Llama, Phi, Qwen2 … Partial tuning
    ("train layers from N up") then works for any family without knowing its names."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            size = sum(p.numel() for p in module.parameters())
            if best is None or size > best[0]:
                best = (size, name, module)
    if best is None:
        raise ValueError(f"{type(model).__name__} has no stack of layers (no nn.ModuleList)")
    return best[1], best[2]
