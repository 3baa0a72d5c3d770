"""Mistral's sliding window is honoured wherever vlmsweep runs the LLM.

A 2-layer Mistral with a window of W tokens lets the last position see tokens at most
2 × (W - 1) positions back (each layer reaches W - 1 further). Changing a token one step
beyond that reach must leave the last position's output exactly as it was, and changing one
inside it must not, on every path: a padded batch (evaluation, export), a packed training row
(position ids restarting per sample, no mask: the variable-length attention), and cached
greedy generation (compared with recomputing the whole sequence at every step).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, MistralConfig

from _tiny import random_image
from vlmsweep.config.schema import ConnectorConfig, LLMConfig, ModelConfig, VisionConfig
from vlmsweep.models.llm import byte_tokenizer, get_llm_family
from vlmsweep.models.vision import load_image_processor, preprocess_images
from vlmsweep.models.vlm import IGNORE_INDEX, IMAGE_TOKEN_ID, build_vlm
from vlmsweep.zoo.spec import content_key, zoo_spec

WINDOW, LAYERS = 4, 2
REACH = LAYERS * (WINDOW - 1)   # the farthest token the last position still depends on


@pytest.fixture(scope="module")
def vlm(tmp_path_factory, preset_root):
    """CLIP (tiny preset) → mlp2x_gelu → a 2-layer Mistral with a 4-token window."""
    out = tmp_path_factory.mktemp("mistral-window")
    tokenizer = byte_tokenizer(get_llm_family("mistral"))
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                           sliding_window=WINDOW, pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    cfg = ModelConfig(vision=VisionConfig(family="clip"), llm=LLMConfig(family="mistral", checkpoint=str(out)),
                      connector=ConnectorConfig(name="mlp2x_gelu"))
    model = build_vlm(cfg, preset_root).eval()
    assert model.llm.config.sliding_window == WINDOW
    model.processor = load_image_processor(cfg.vision, preset_root)
    return model


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(10, 200, (n,), generator=torch.Generator().manual_seed(seed))


def _changed(ids: torch.Tensor, back: int) -> torch.Tensor:
    """ids with the token `back` positions before the last one replaced."""
    out = ids.clone()
    out[-1 - back] = 10 + (out[-1 - back] - 9) % 190
    return out


def _padded_loss(vlm, ids: torch.Tensor, pixels=None) -> torch.Tensor:
    """VLM.forward on a left-padded batch with an attention mask, the last position labelled."""
    pad = 3
    row = torch.cat([torch.zeros(pad, dtype=torch.long), ids])[None]
    mask = torch.cat([torch.zeros(pad, dtype=torch.long), torch.ones(len(ids), dtype=torch.long)])[None]
    targets = torch.full_like(row, IGNORE_INDEX)
    targets[0, -1] = 42
    with torch.no_grad():
        return vlm(row, targets, pixels, attention_mask=mask)


def _packed_loss(vlm, ids: torch.Tensor, pixels=None) -> torch.Tensor:
    """VLM.forward on a packed row: another sample first, positions restarting, no mask."""
    other = _ids(9, seed=7)
    row = torch.cat([other, ids])[None]
    positions = torch.cat([torch.arange(len(other)), torch.arange(len(ids))])[None]
    targets = torch.full_like(row, IGNORE_INDEX)
    targets[0, -1] = 42
    with torch.no_grad():
        return vlm(row, targets, pixels, position_ids=positions)


@pytest.mark.parametrize("path", ["padded", "packed"])
def test_tokens_beyond_the_window_do_not_reach_the_last_position(vlm, path):
    loss = _padded_loss if path == "padded" else _packed_loss
    ids = _ids(24)
    base = loss(vlm, ids)
    assert torch.equal(loss(vlm, _changed(ids, REACH + 1)), base), "a token beyond the window changed the output"
    assert torch.equal(loss(vlm, _changed(ids, REACH + 5)), base)
    assert not torch.allclose(loss(vlm, _changed(ids, REACH)), base), "a token inside the window had no effect"
    assert not torch.allclose(loss(vlm, _changed(ids, 1)), base)


@pytest.mark.parametrize("path", ["padded", "packed"])
def test_an_image_beyond_the_window_is_not_seen(vlm, path):
    """An image whose last feature token is beyond the reach changes nothing; one inside does."""
    loss = _padded_loss if path == "padded" else _packed_loss
    n = vlm.image_tokens
    pixels = torch.from_numpy(preprocess_images(vlm.processor, [random_image(1)], "pad"))
    other = torch.from_numpy(preprocess_images(vlm.processor, [random_image(2)], "pad"))
    far = torch.cat([torch.full((n,), IMAGE_TOKEN_ID), _ids(REACH + 1)])
    near = torch.cat([_ids(5), torch.full((n,), IMAGE_TOKEN_ID), _ids(REACH - 1)])
    assert torch.equal(loss(vlm, far, pixels), loss(vlm, far, other))
    assert not torch.allclose(loss(vlm, near, pixels), loss(vlm, near, other))


def test_cached_generation_equals_recomputing_past_the_window(vlm):
    """Greedy generation with the KV cache (VLM.generate, evaluation's call) gives, step by step,
    the logits of a full forward pass over the sequence so far: the cache keeps the window."""
    prompt = _ids(3 * WINDOW)[None]
    embeds = vlm.embed(prompt, None)
    with torch.no_grad():
        out = vlm.llm.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(prompt), max_new_tokens=3 * WINDOW,
                               do_sample=False, num_beams=1, use_cache=True, output_logits=True,
                               return_dict_in_generate=True, eos_token_id=None, pad_token_id=0)
        tokens = out.sequences[0]
        assert tokens.tolist() == vlm.generate(prompt, torch.ones_like(prompt), None, max_new_tokens=3 * WINDOW,
                                               stop_token_id=-1, pad_token_id=0)[0].tolist()
        full = torch.cat([prompt[0], tokens])
        for step, logits in enumerate(out.logits):
            recomputed = vlm.llm(input_ids=full[None, :prompt.shape[1] + step], use_cache=False).logits[0, -1]
            torch.testing.assert_close(logits[0], recomputed, atol=1e-5, rtol=1e-5)


def test_the_zoo_mistral_has_a_window_inside_its_context():
    for size in ("tiny", "small"):
        (lm,) = [lm for lm in zoo_spec(size).lms if lm.name == "mistral"]
        assert lm.family == "mistral" and lm.sliding_window and lm.sliding_window < lm.seq_len
        assert lm.kv_heads * 4 == lm.heads   # Mistral-7B's grouped-query attention: 32 query, 8 key-value heads
        others = [o for o in zoo_spec(size).lms if o.name != "mistral"]
        assert all(o.sliding_window is None for o in others)
    # a spec field at None stays out of the cache key: artifacts built before it existed are reused
    from dataclasses import asdict

    lm = zoo_spec("small").lms[0]
    fields = {k: v for k, v in asdict(lm).items() if k != "sliding_window"}
    assert content_key("llm", lm) == content_key("llm", fields)
