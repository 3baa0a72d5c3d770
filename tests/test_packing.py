"""Packing: a packed row computes exactly what its samples compute alone (per-token losses and
logits), and pack() respects its limits and the stream order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _tiny import IMAGE_SHAPE, QFORMER, Tiny, model_config
from vlmsweep.data.packing import Row, Sample, collate, pack, shifted_targets
from vlmsweep.models.vlm import IGNORE_INDEX, IMAGE_TOKEN_ID

ATOL = 1e-5


def per_token(vlm, batch):
    """(logits at labelled positions, per-token losses) of one collated batch, in row order."""
    embeds = vlm.embed(batch.input_ids, batch.pixel_values)
    hidden = vlm.llm.get_decoder()(inputs_embeds=embeds, position_ids=batch.position_ids,
                                   attention_mask=batch.attention_mask, use_cache=False).last_hidden_state
    keep = batch.targets != IGNORE_INDEX
    logits = vlm.llm.get_output_embeddings()(hidden[keep]).float()
    return logits, F.cross_entropy(logits, batch.targets[keep], reduction="none")


@pytest.fixture(scope="module", params=["llama", "qwen2", "phi", "llama+qformer", "qwen2+delimiters", "llama+fused"])
def tiny(request, preset_root):
    llm, _, extra = request.param.partition("+")
    options = QFORMER if extra == "qformer" else {"image_delimiters": True} if extra == "delimiters" else {}
    t = Tiny(preset_root, model_config("dinov2+siglip" if extra == "fused" else "clip", llm, **options))
    t.vlm.eval()
    return t


@pytest.fixture(scope="module")
def samples(tiny):
    out = tiny.samples()  # image, text-only (2 turns), two images, text-only
    assert [len(s.pixel_values) for s in out] == [1, 0, 2, 0]
    return out


def _alone(tiny, samples):
    logits, losses = [], []
    with torch.no_grad():
        for s in samples:
            batch = collate([Row([s])], tiny.pad_id)
            assert batch.attention_mask is not None  # one sample per row: an ordinary mask
            lg, ls = per_token(tiny.vlm, batch)
            logits.append(lg)
            losses.append(ls)
    return logits, losses


def test_packed_row_matches_each_sample_run_alone(tiny, samples):
    packed = collate([Row(samples)], tiny.pad_id)
    assert packed.attention_mask is None
    assert packed.input_ids.shape == (1, sum(len(s) for s in samples))
    assert packed.pixel_values.shape[0] == 3
    # positions restart at 0 for every sample
    starts = np.cumsum([0] + [len(s) for s in samples[:-1]])
    assert all(int(packed.position_ids[0, a]) == 0 for a in starts)

    with torch.no_grad():
        p_logits, p_losses = per_token(tiny.vlm, packed)
        p_mean = tiny.vlm(packed.input_ids, packed.targets, packed.pixel_values, packed.position_ids, None)
    a_logits, a_losses = _alone(tiny, samples)

    # labelled positions come in sample order in both, so they line up one to one
    torch.testing.assert_close(p_logits, torch.cat(a_logits), rtol=0, atol=ATOL)
    torch.testing.assert_close(p_losses, torch.cat(a_losses), rtol=0, atol=ATOL)
    counts = [len(x) for x in a_losses]
    for k, chunk in enumerate(torch.split(p_losses, counts)):
        assert abs(chunk.double().sum().item() - a_losses[k].double().sum().item()) < ATOL, f"sample {k}"
    assert abs(p_losses.double().sum().item() - torch.cat(a_losses).double().sum().item()) < ATOL
    # VLM.forward's mean over all labelled tokens of the row
    assert abs(p_mean.item() - torch.cat(a_losses).mean().item()) < ATOL
    assert packed.target_tokens == sum(counts)


def test_batch_of_padded_packed_rows_matches_samples_alone(tiny, samples):
    """Two packed rows of different lengths: the shorter is right-padded, and padding is a
    block of its own that neither attends to the samples nor carries targets."""
    rows = [Row(samples[:2]), Row(samples[2:])]
    batch = collate(rows, tiny.pad_id)
    assert batch.attention_mask is None
    assert batch.real_tokens == sum(len(s) for s in samples) < batch.total_tokens
    with torch.no_grad():
        b_logits, b_losses = per_token(tiny.vlm, batch)
    a_logits, a_losses = _alone(tiny, samples)
    torch.testing.assert_close(b_logits, torch.cat(a_logits), rtol=0, atol=ATOL)
    torch.testing.assert_close(b_losses, torch.cat(a_losses), rtol=0, atol=ATOL)


def test_padded_unpacked_batch_matches_samples_alone(tiny, samples):
    batch = collate([Row([s]) for s in samples], tiny.pad_id)
    assert batch.attention_mask is not None
    assert batch.attention_mask.sum(1).tolist() == [len(s) for s in samples]
    with torch.no_grad():
        b_logits, b_losses = per_token(tiny.vlm, batch)
    a_logits, a_losses = _alone(tiny, samples)
    torch.testing.assert_close(b_logits, torch.cat(a_logits), rtol=0, atol=ATOL)
    torch.testing.assert_close(b_losses, torch.cat(a_losses), rtol=0, atol=ATOL)


def test_packed_row_never_predicts_across_a_sample_boundary(tiny, samples):
    packed = collate([Row(samples)], tiny.pad_id)
    ends = np.cumsum([len(s) for s in samples]) - 1
    assert all(int(packed.targets[0, e]) == IGNORE_INDEX for e in ends)
    # targets are each sample's labels shifted by one inside the sample
    expected = np.concatenate([shifted_targets(s.labels) for s in samples])
    assert np.array_equal(packed.targets[0].numpy(), expected)
    # and images land in order: the i-th image's positions get the i-th image's features
    features = tiny.vlm.connector(tiny.vlm.vision(packed.pixel_values))
    with torch.no_grad():
        embeds = tiny.vlm.embed(packed.input_ids, packed.pixel_values)
    image_rows = embeds[0][packed.input_ids[0] == IMAGE_TOKEN_ID]
    torch.testing.assert_close(image_rows, features.reshape(-1, features.shape[-1]), rtol=0, atol=1e-6)


# ---- pack() ----

def _fake(i: int, length: int, images: int = 0) -> Sample:
    ids = np.arange(length, dtype=np.int64)
    return Sample(f"s{i}", ids, ids.copy(), np.zeros((images, *IMAGE_SHAPE), np.float32), position=(0, i + 1, i + 1))


STREAM = [_fake(0, 30, 1), _fake(1, 50), _fake(2, 25, 2), _fake(3, 40, 1), _fake(4, 90), _fake(5, 10, 3),
          _fake(6, 100), _fake(7, 5)]


@pytest.mark.parametrize("max_length, max_images", [(100, 16), (120, 2), (200, 3), (100, 1)])
def test_pack_respects_max_length_and_max_images_and_keeps_stream_order(max_length, max_images):
    rows = list(pack(iter(STREAM), max_length, max_images))
    flat = [s.id for r in rows for s in r.samples]
    assert flat == [s.id for s in STREAM]  # every sample once, in stream order
    for k, row in enumerate(rows):
        assert row.samples
        if len(row.samples) > 1:  # a lone sample may exceed a limit (it can't be split)
            assert row.length <= max_length
            assert row.images <= max_images
        assert row.end_position == row.samples[-1].position
        # sequential packing: a row is closed only because the next sample did not fit
        if k + 1 < len(rows):
            nxt = rows[k + 1].samples[0]
            assert (row.length + len(nxt) > max_length) or (row.images + len(nxt.pixel_values) > max_images)
    ends = [r.end_position for r in rows]
    assert ends == sorted(ends) and ends[-1] == STREAM[-1].position


def test_pack_example_rows():
    rows = list(pack(iter(STREAM), 100, 16))
    assert [[s.id for s in r.samples] for r in rows] == [
        ["s0", "s1"], ["s2", "s3"], ["s4", "s5"], ["s6"], ["s7"]]
    assert [r.length for r in rows] == [80, 65, 100, 100, 5]
    assert [r.images for r in rows] == [1, 3, 3, 0, 0]
    rows = list(pack(iter(STREAM), 100, 2))
    assert [[s.id for s in r.samples] for r in rows] == [
        ["s0", "s1"], ["s2"], ["s3"], ["s4"], ["s5"], ["s6"], ["s7"]]


def test_no_packing_gives_one_sample_per_row():
    rows = list(pack(iter(STREAM), 10_000, 100, packing=False))
    assert [[s.id for s in r.samples] for r in rows] == [[s.id] for s in STREAM]
    assert [r.end_position for r in rows] == [s.position for s in STREAM]


def test_oversized_sample_gets_a_row_of_its_own():
    rows = list(pack(iter([_fake(0, 10), _fake(1, 500), _fake(2, 10)]), 100, 16))
    assert [[s.id for s in r.samples] for r in rows] == [["s0"], ["s1"], ["s2"]]


def test_pack_is_lazy_and_yields_rows_as_the_stream_goes():
    consumed = []

    def stream():
        for s in STREAM:
            consumed.append(s.id)
            yield s
    rows = pack(stream(), 100, 16)
    first = next(rows)
    assert [s.id for s in first.samples] == ["s0", "s1"]
    assert consumed == ["s0", "s1", "s2"]  # only one sample past the row was read


def test_collate_pads_and_counts_tokens():
    rows = [Row([_fake(0, 3, 1), _fake(1, 2)]), Row([_fake(2, 4)])]
    batch = collate(rows, pad_id=7, length=8)
    assert batch.input_ids.tolist() == [[0, 1, 2, 0, 1, 7, 7, 7], [0, 1, 2, 3, 7, 7, 7, 7]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 2, 3, 0, 1, 2, 3]]
    assert batch.targets.tolist() == [[1, 2, -100, 1, -100, -100, -100, -100], [1, 2, 3, -100, -100, -100, -100, -100]]
    assert (batch.real_tokens, batch.total_tokens, batch.samples, batch.target_tokens) == (9, 16, 3, 6)
    assert batch.pixel_values.shape == (1, *IMAGE_SHAPE)
    assert batch.attention_mask is None
    text_only = collate([Row([_fake(0, 3)])], pad_id=0, image_shape=IMAGE_SHAPE)
    assert text_only.pixel_values.shape == (0, *IMAGE_SHAPE)
    assert text_only.attention_mask.tolist() == [[1, 1, 1]]


def test_varlen_attention_matches_each_sample_run_alone(tiny, samples):
    """The per-segment attention VLM.forward uses for packed rows: logits equal, token by token."""
    from vlmsweep.models.attention import VARLEN, attention_implementation

    packed = collate([Row(samples), Row(samples[1:3])], tiny.pad_id)
    with torch.no_grad(), attention_implementation(tiny.vlm.llm, VARLEN):
        v_logits, v_losses = per_token(tiny.vlm, packed)
    a_logits, a_losses = _alone(tiny, samples + samples[1:3])
    torch.testing.assert_close(v_logits, torch.cat(a_logits), rtol=0, atol=ATOL)
    torch.testing.assert_close(v_losses, torch.cat(a_losses), rtol=0, atol=ATOL)
