"""model.llm.image_delimiters: DeepSpeed-VisualChat's three image tokens. `<image>` is the
placeholder the features replace; <im_start> and <im_end>, added to the vocabulary, enclose
each image's positions, in training samples and generation prompts alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _tiny import CONVERSATIONS, Tiny, model_config
from vlmsweep.config.load import resolve
from vlmsweep.data.packing import Row, collate
from vlmsweep.data.tokenize import SkipSample, prompt_ids, tokenize_conversation
from vlmsweep.models.llm import IMAGE_END, IMAGE_START, image_delimiters
from vlmsweep.models.vlm import IGNORE_INDEX, IMAGE_TOKEN_ID
from vlmsweep.train.stage import stage_id


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def pair(request, preset_root):
    torch.manual_seed(0)
    plain = Tiny(preset_root, model_config("clip", request.param))
    torch.manual_seed(0)
    delimited = Tiny(preset_root, model_config("clip", request.param, image_delimiters=True))
    return plain, delimited


def test_two_special_tokens_join_the_vocabulary_and_the_embeddings(pair):
    plain, delimited = pair
    assert image_delimiters(plain.tokenizer, plain.cfg.llm) is None
    start, end = image_delimiters(delimited.tokenizer, delimited.cfg.llm)
    assert len(delimited.tokenizer) == len(plain.tokenizer) + 2 and {start, end} == {len(plain.tokenizer),
                                                                                      len(plain.tokenizer) + 1}
    assert delimited.tokenizer.convert_ids_to_tokens([start, end]) == [IMAGE_START, IMAGE_END]
    # written as text, they are one token each, never split into pieces
    assert delimited.tokenizer("<im_start>x<im_end>", add_special_tokens=False)["input_ids"][0] == start
    embed = delimited.vlm.llm.get_input_embeddings().weight
    assert embed.shape[0] >= len(delimited.tokenizer)
    old = plain.vlm.llm.get_input_embeddings().weight
    # the original rows are untouched; the new ones start near the others' mean (mean resizing)
    torch.testing.assert_close(embed[:old.shape[0]], old)
    assert (embed[start] - old.mean(0)).norm() < (old - old.mean(0)).norm(dim=1).mean()


def test_each_image_sits_between_the_delimiters_unlabelled(pair):
    plain, delimited = pair
    conversation, n = CONVERSATIONS[2]   # two images in one user turn
    start, end = image_delimiters(delimited.tokenizer, delimited.cfg.llm)
    a = plain.sample(0, conversation, n)
    b = delimited.sample(0, conversation, n)
    k = delimited.vlm.image_tokens
    assert len(b.input_ids) == len(a.input_ids) + 2 * n
    runs = np.flatnonzero(b.input_ids == IMAGE_TOKEN_ID)
    firsts = [runs[0], runs[k]]
    for first in firsts:
        assert b.input_ids[first - 1] == start and b.input_ids[first + k] == end
        assert (b.labels[first - 1:first + k + 1] == IGNORE_INDEX).all()
    # everything else is the plain sample's
    keep = ~np.isin(b.input_ids, [start, end])
    assert np.array_equal(b.input_ids[keep], a.input_ids) and np.array_equal(b.labels[keep], a.labels)
    # a generation prompt is built the same way
    ids = prompt_ids(delimited.tokenizer, delimited.template, conversation[:1], k, (start, end))
    assert np.array_equal(ids[:len(ids)], b.input_ids[:len(ids)])


def test_a_cut_that_would_leave_an_image_open_skips_the_sample(pair):
    _, delimited = pair
    conversation, n = CONVERSATIONS[0]
    whole = delimited.sample(0, conversation, n)
    close = int(np.flatnonzero(whole.input_ids == IMAGE_TOKEN_ID)[-1]) + 1    # where <im_end> is
    with pytest.raises(SkipSample) as skip:
        tokenize_conversation(delimited.tokenizer, delimited.template, conversation, n, delimited.vlm.image_tokens,
                              max_length=close, delimiters=image_delimiters(delimited.tokenizer, delimited.cfg.llm))
    assert skip.value.reason == "too_long_image_cut"


def test_the_model_trains_on_packed_rows_and_the_delimiters_learn(pair):
    _, delimited = pair
    vlm = delimited.vlm.train()
    batch = collate([Row(delimited.samples())], delimited.pad_id)
    loss = vlm(batch.input_ids, batch.targets, batch.pixel_values, batch.position_ids, batch.attention_mask)
    assert torch.isfinite(loss)
    loss.backward()
    grad = vlm.llm.get_input_embeddings().weight.grad
    for token in image_delimiters(delimited.tokenizer, delimited.cfg.llm):
        assert grad[token].abs().sum() > 0
    vlm.zero_grad()


def test_the_option_is_in_the_stage_id_only_when_on():
    raw = {"name": "v", "recipe": "base", "training": {"steps": 5, "global_batch": 4, "micro_batch": 2}}
    off = resolve(raw)
    on = resolve({**raw, "model": {"llm": {"image_delimiters": True}}})
    assert "image_delimiters" in off.model.llm.model_dump()
    assert stage_id(off, 0, "data") != stage_id(on, 0, "data")
    # ids of configs that don't use it are those of before the option existed: the llm entry
    # hashes exactly the fields it had
    import hashlib
    import json

    from vlmsweep.data.order import ORDER_VERSION
    from vlmsweep.data.tokenize import LABELS_VERSION
    from vlmsweep.train.stage import _identity_of_stage

    model = off.model.model_dump(mode="json")
    del model["llm"]["image_delimiters"]
    del model["vision"]["image_size"]     # likewise (unset)
    payload = {"model": model, "data": "data", "seed": off.seed, "stages": [_identity_of_stage(off.recipe.stages[0])],
               "labels": LABELS_VERSION, "order": ORDER_VERSION}
    assert stage_id(off, 0, "data") == hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
