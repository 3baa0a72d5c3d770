"""Greedy generation with a KV cache: equal to a no-cache loop, and batch-size independent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmsweep.data.packing import left_pad
from vlmsweep.data.tokenize import prompt_ids, stop_token_id
from vlmsweep.models.vlm import IMAGE_TOKEN_ID

from _tiny import QFORMER, Tiny, model_config, random_image

PROMPTS = [
    ([{"role": "user", "text": "<image>\nWhat is this?"}], 1),
    ([{"role": "user", "text": "Say something longer, please, about shapes."}], 0),
    ([{"role": "user", "text": "<image>\n<image>\nWhich one?"}], 2),
]


@pytest.fixture(scope="module", params=["mlp2x_gelu", "qformer", "fused"])
def tiny(request, preset_root):
    torch.manual_seed(0)
    vision = "dinov2+siglip" if request.param == "fused" else "clip"
    t = Tiny(preset_root, model_config(vision, "qwen2", **(QFORMER if request.param == "qformer" else {})))
    t.vlm.eval()
    return t


def _encode(tiny, conversation, n_images, seed):
    ids = prompt_ids(tiny.tokenizer, "chatml", conversation, tiny.vlm.image_tokens)
    images = [random_image(seed + k) for k in range(n_images)]
    pixels = torch.from_numpy(tiny.images(images)) if n_images else None
    return ids, pixels


def _generate(tiny, items, max_new_tokens=12):
    ids, mask = left_pad([i for i, _ in items], tiny.tokenizer.pad_token_id)
    pixels = [p for _, p in items if p is not None]
    pixel_values = torch.cat(pixels) if pixels else None
    out = tiny.vlm.generate(ids, mask, pixel_values, max_new_tokens=max_new_tokens,
                            stop_token_id=stop_token_id(tiny.tokenizer, "chatml"),
                            pad_token_id=tiny.tokenizer.pad_token_id)
    return out.tolist()


def _strip(tokens, stop, pad):
    out = []
    for t in tokens:
        if t == stop:
            break
        out.append(t)
    return [t for t in out if t != pad]


def test_kv_cache_greedy_equals_a_full_recompute_loop(tiny):
    ids, pixels = _encode(tiny, *PROMPTS[0], seed=1)
    cached = _generate(tiny, [(ids, pixels)], max_new_tokens=8)[0]
    seq = torch.from_numpy(ids)[None]
    manual = []
    with torch.no_grad():
        for _ in range(8):
            embeds = tiny.vlm.embed(seq, pixels)
            logits = tiny.vlm.llm(inputs_embeds=embeds, use_cache=False).logits[0, -1]
            nxt = int(logits.argmax())
            manual.append(nxt)
            if nxt == stop_token_id(tiny.tokenizer, "chatml"):
                break
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
    assert cached[:len(manual)] == manual


def test_batched_generation_equals_one_at_a_time(tiny):
    items = [_encode(tiny, conv, n, seed=10 * i) for i, (conv, n) in enumerate(PROMPTS)]
    assert (items[2][0] == IMAGE_TOKEN_ID).sum() == 2 * tiny.vlm.image_tokens
    stop, pad = stop_token_id(tiny.tokenizer, "chatml"), tiny.tokenizer.pad_token_id
    batched = [_strip(t, stop, pad) for t in _generate(tiny, items)]
    alone = [_strip(_generate(tiny, [item])[0], stop, pad) for item in items]
    assert batched == alone
    assert any(len(t) > 0 for t in batched)


def test_left_pad_puts_every_prompt_at_the_end():
    ids, mask = left_pad([np.array([5, 6, 7]), np.array([9])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
