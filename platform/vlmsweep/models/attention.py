"""Variable-length attention for packed rows.

A packed row holds several samples; attending over the whole row with a block-diagonal
mask computes every cross-sample block only to mask it away (on CPU that was ~60% of a
packed training step at 1024 tokens). Here each sample's segment — found where
position_ids restart at 0 — runs causal scaled-dot-product attention on its own, so the
work is that of the samples alone.

Registered with transformers' AttentionInterface under VARLEN; it isn't registered as a
mask function, so transformers also skips building the dense packed mask. VLM.forward
switches to it only for packed batches; padded batches and generation use "sdpa".
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

VARLEN = "vlmsweep_varlen"


def segment_bounds(position_ids: torch.Tensor) -> list[list[int]]:
    """Per row, the start index of every segment plus the row length."""
    length = position_ids.shape[-1]
    starts = (position_ids == 0).nonzero().tolist()
    bounds: list[list[int]] = [[] for _ in range(position_ids.shape[0])]
    for row, col in starts:
        bounds[row].append(col)
    return [(b if b and b[0] == 0 else [0] + b) + [length] for b in bounds]


def _window_mask(length: int, window: int | None, device) -> torch.Tensor | None:
    """Causal and sliding-window mask (True = attend) for one segment, or None when the window
    covers it: a query sees itself and the window - 1 keys before it, as transformers' masks."""
    if window is None or length <= window:
        return None
    i = torch.arange(length, device=device)
    distance = i[:, None] - i[None, :]
    return (distance >= 0) & (distance < window)


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     position_ids=None, sliding_window: int | None = None, **kwargs):
    """query [B, Hq, L, D], key/value [B, Hkv, L, D] → ([B, L, Hq, D], None), like sdpa_attention_forward.

    `sliding_window` (Mistral passes its config's) limits each query to the window - 1 keys
    before it within its own segment; without it a packed row would attend past the window
    that padded batches and generation honour."""
    if position_ids is None:
        raise ValueError(f"{VARLEN} attention needs position_ids that restart at 0 per packed sample")
    repeat = query.shape[1] // key.shape[1]
    if repeat > 1:  # grouped-query attention: share each key/value head across its query heads
        key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
    rows = []
    for b, bounds in enumerate(segment_bounds(position_ids.expand(query.shape[0], -1))):
        pieces = []
        for s, e in zip(bounds, bounds[1:]):
            mask = _window_mask(e - s, sliding_window, query.device)
            pieces.append(F.scaled_dot_product_attention(query[b:b + 1, :, s:e], key[b:b + 1, :, s:e],
                                                         value[b:b + 1, :, s:e], attn_mask=mask,
                                                         is_causal=mask is None, scale=scaling, dropout_p=dropout))
        rows.append(torch.cat(pieces, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


AttentionInterface.register(VARLEN, varlen_attention)


@contextmanager
def attention_implementation(model, name: str):
    """Run `model` (a transformers model) with another registered attention implementation."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before
