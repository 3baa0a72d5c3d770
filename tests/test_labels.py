"""Labels: only assistant replies (each with its template's stop token) are learned, checked by
decoding; image positions are never labelled; unusable samples are skipped with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from vlmsweep import IMAGE_MARKER
from vlmsweep.config.schema import LLMConfig
from vlmsweep.data.tokenize import (SkipSample, prompt_ids, special_tokens, stop_token_id, tokenize_conversation,
                                    tokenize_segments)
from vlmsweep.models.llm import load_tokenizer
from vlmsweep.models.templates import TEMPLATES, get_template, render
from vlmsweep.models.vlm import IGNORE_INDEX, IMAGE_TOKEN_ID

# the LLM family whose tiny tokenizer carries each chat template's special tokens
TEMPLATE_FAMILY = {"vicuna": "llama", "chatml": "qwen2", "gemma": "gemma", "mistral": "mistral", "pure": "llama"}
# vicuna's "ASSISTANT: " (and pure's "Out: ") space belongs to the reply (the model learns to produce it)
LEAD = {"vicuna": " ", "pure": " "}
STOP = {"vicuna": "</s>", "chatml": "<|im_end|>", "gemma": "<end_of_turn>", "mistral": "</s>", "pure": "</s>",
        "plain": "</s>"}
IMAGE_TOKENS = 5

REPLIES = ["A red café, I think.", "Two dogs\nand  one cat."]
CHAT = [
    {"role": "system", "text": "Answer briefly."},
    {"role": "user", "text": f"{IMAGE_MARKER}\nWhat is in the picture?"},
    {"role": "assistant", "text": REPLIES[0]},
    {"role": "user", "text": f"And here {IMAGE_MARKER} {IMAGE_MARKER}?"},
    {"role": "assistant", "text": REPLIES[1]},
]


@pytest.fixture(scope="module")
def tokenizers(preset_root):
    return {fam: load_tokenizer(LLMConfig(family=fam), preset_root) for fam in set(TEMPLATE_FAMILY.values())}


def labelled_runs(tok, out) -> list[str]:
    """Each contiguous run of labelled positions, decoded (special tokens kept)."""
    idx = np.flatnonzero(out.labels != IGNORE_INDEX)
    runs = np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1) if idx.size else []
    return [tok.decode(out.input_ids[r].tolist(), skip_special_tokens=False) for r in runs]


def test_every_template_has_a_family_here():
    assert set(TEMPLATES) - {"plain"} == set(TEMPLATE_FAMILY)


@pytest.mark.parametrize("template", sorted(TEMPLATE_FAMILY))
def test_chat_template_labels_decode_to_exactly_the_replies_and_stop_tokens(tokenizers, template):
    tok = tokenizers[TEMPLATE_FAMILY[template]]
    out = tokenize_conversation(tok, template, CHAT, num_images=3, image_tokens=IMAGE_TOKENS, max_length=4096)
    stop = STOP[template]
    assert get_template(template).stop(special_tokens(tok)) == stop
    assert labelled_runs(tok, out) == [LEAD.get(template, "") + reply + stop for reply in REPLIES]
    # and every labelled position carries its own input id (labels are not shifted here)
    keep = out.labels != IGNORE_INDEX
    assert np.array_equal(out.labels[keep], out.input_ids[keep])
    # the stop token is one token, learned once per reply, and is the id generation stops at
    stop_id = stop_token_id(tok, template)
    assert tok.convert_ids_to_tokens(stop_id) == stop
    assert int((out.labels == stop_id).sum()) == len(REPLIES)

    images = out.input_ids == IMAGE_TOKEN_ID
    assert int(images.sum()) == IMAGE_TOKENS * 3
    assert (out.labels[images] == IGNORE_INDEX).all()
    # the prompt text around the images is all there and unlabelled
    text = tok.decode(out.input_ids[~images & ~keep].tolist(), skip_special_tokens=False)
    assert "What is in the picture?" in text and "Answer briefly." in text
    assert not out.truncated


@pytest.mark.parametrize("template", sorted(TEMPLATE_FAMILY))
def test_chat_template_without_system_turn_labels_only_the_reply(tokenizers, template):
    tok = tokenizers[TEMPLATE_FAMILY[template]]
    conv = [{"role": "user", "text": "Hi?"}, {"role": "assistant", "text": "Hello!"}]
    out = tokenize_conversation(tok, template, conv, 0, IMAGE_TOKENS, 4096)
    assert labelled_runs(tok, out) == [LEAD.get(template, "") + "Hello!" + STOP[template]]
    assert not (out.input_ids == IMAGE_TOKEN_ID).any()


@pytest.fixture(scope="module")
def bpe_tokenizers():
    """GPT-2-style byte-level BPE (as the zoo's and most real LLMs'): merges the space before a
    word into the word's token, which the byte-level test tokenizers never do."""
    from vlmsweep.zoo.text import family_tokenizer, train_tokenizer

    texts = [f"USER: {t['text']} ASSISTANT: {r['text']}" for t, r in zip(CHAT[1::2], CHAT[2::2])] * 50
    core = train_tokenizer(texts + REPLIES * 50 + ["top right", "Answer briefly."] * 50, 400)
    return {fam: family_tokenizer(core, fam) for fam in set(TEMPLATE_FAMILY.values())}


@pytest.mark.parametrize("kind", ["bytes", "bpe"])
@pytest.mark.parametrize("template", sorted(TEMPLATE_FAMILY))
def test_prompt_for_generation_is_the_training_text_up_to_the_first_reply(tokenizers, bpe_tokenizers, template, kind):
    tok = (tokenizers if kind == "bytes" else bpe_tokenizers)[TEMPLATE_FAMILY[template]]
    for turns in (2, 4):  # the first reply, and a second one after a finished turn
        prompt = prompt_ids(tok, template, CHAT[:turns], IMAGE_TOKENS)
        images = sum(t["text"].count(IMAGE_MARKER) for t in CHAT[:turns])
        train = tokenize_conversation(tok, template, CHAT[:turns + 1], images, IMAGE_TOKENS, 4096)
        labelled = np.flatnonzero(train.labels != IGNORE_INDEX)
        reply_start = int(labelled[0] if turns == 2 else labelled[np.flatnonzero(np.diff(labelled) != 1)[0] + 1])
        assert np.array_equal(prompt, train.input_ids[:reply_start]), tok.decode(prompt[-5:].tolist())


def test_bpe_prompt_does_not_end_in_a_lone_space(bpe_tokenizers):
    """vicuna's "ASSISTANT: " alone would end in a "Ġ" token the model never saw before a reply."""
    tok = bpe_tokenizers["llama"]
    prompt = prompt_ids(tok, "vicuna", CHAT[:2], IMAGE_TOKENS)
    assert tok.decode(prompt[-1:].tolist()) == ":"
    assert tok.convert_ids_to_tokens(
        tok("USER: x ASSISTANT: ", add_special_tokens=False).input_ids)[-1] == "Ġ"  # what it avoids


def test_plain_template_labels_the_caption_and_eos_only(tokenizers):
    tok = tokenizers["llama"]
    caption = "A small red cube left of a blue ball."
    conv = [{"role": "user", "text": f"Describe {IMAGE_MARKER} and {IMAGE_MARKER} please."},
            {"role": "assistant", "text": caption}]
    segments = render("plain", conv, special_tokens(tok))
    # plain drops the instruction text: the images, then the caption
    assert segments == [(IMAGE_MARKER * 2, False), (caption + "</s>", True)]
    out = tokenize_conversation(tok, "plain", conv, 2, IMAGE_TOKENS, 4096)
    assert labelled_runs(tok, out) == [caption + STOP["plain"]]
    images = out.input_ids == IMAGE_TOKEN_ID
    assert int(images.sum()) == 2 * IMAGE_TOKENS
    assert images[:2 * IMAGE_TOKENS].all()  # images first, nothing else before the caption
    assert len(out.input_ids) == 2 * IMAGE_TOKENS + len(tok(caption + "</s>", add_special_tokens=False)["input_ids"])
    assert (out.labels[images] == IGNORE_INDEX).all()


def test_plain_template_rejects_more_than_one_turn(tokenizers):
    conv = [{"role": "user", "text": IMAGE_MARKER}, {"role": "assistant", "text": "a"},
            {"role": "user", "text": "b"}, {"role": "assistant", "text": "c"}]
    with pytest.raises(SkipSample) as err:
        tokenize_conversation(tokenizers["llama"], "plain", conv, 1, IMAGE_TOKENS, 4096)
    assert err.value.reason == "bad_conversation"


# ---- skipped samples ----

def _conv(user: str, reply: str = "Yes.") -> list[dict]:
    return [{"role": "user", "text": user}, {"role": "assistant", "text": reply}]


@pytest.mark.parametrize("markers, images", [(1, 0), (0, 1), (2, 1)])
def test_image_count_mismatch_is_skipped(tokenizers, markers, images):
    with pytest.raises(SkipSample) as err:
        tokenize_conversation(tokenizers["llama"], "vicuna", _conv(IMAGE_MARKER * markers + " Is it?"), images,
                              IMAGE_TOKENS, 4096)
    assert err.value.reason == "image_count_mismatch"


def test_image_marker_outside_a_user_turn_is_skipped(tokenizers):
    conv = [{"role": "user", "text": IMAGE_MARKER}, {"role": "assistant", "text": f"see {IMAGE_MARKER}"}]
    with pytest.raises(SkipSample) as err:
        tokenize_conversation(tokenizers["llama"], "vicuna", conv, 1, IMAGE_TOKENS, 4096)
    assert err.value.reason == "image_marker_outside_user_turn"


@pytest.mark.parametrize("reply", ["", "   ", "\n"])
def test_empty_assistant_reply_is_a_bad_conversation(tokenizers, reply):
    with pytest.raises(SkipSample) as err:
        tokenize_conversation(tokenizers["qwen2"], "chatml", _conv("Hi?", reply), 0, IMAGE_TOKENS, 4096)
    assert err.value.reason == "bad_conversation"


@pytest.mark.parametrize("conv", [
    [{"role": "user", "text": "a"}],                                                     # no reply at all
    [{"role": "assistant", "text": "a"}],                                                # reply without a question
    [{"role": "user", "text": "a"}, {"role": "user", "text": "b"}, {"role": "assistant", "text": "c"}],
    [{"role": "user", "text": "a"}, {"role": "assistant", "text": "b"}, {"role": "system", "text": "late"}],
    [{"role": "narrator", "text": "a"}],
])
def test_malformed_conversations_are_bad_conversations(tokenizers, conv):
    with pytest.raises(SkipSample) as err:
        tokenize_conversation(tokenizers["llama"], "vicuna", conv, 0, IMAGE_TOKENS, 4096)
    assert err.value.reason == "bad_conversation"


def test_overlong_sample_is_dropped_when_overlong_is_drop(tokenizers):
    tok = tokenizers["llama"]
    conv = _conv("Tell me a long story.", "Once upon a time " * 10)
    full = tokenize_conversation(tok, "vicuna", conv, 0, IMAGE_TOKENS, 4096)
    assert len(full.input_ids) > 100
    # exactly max_length fits
    same = tokenize_conversation(tok, "vicuna", conv, 0, IMAGE_TOKENS, len(full.input_ids), overlong="drop")
    assert np.array_equal(same.input_ids, full.input_ids) and not same.truncated
    with pytest.raises(SkipSample) as err:
        tokenize_conversation(tok, "vicuna", conv, 0, IMAGE_TOKENS, len(full.input_ids) - 1, overlong="drop")
    assert err.value.reason == "too_long"


def test_truncate_keeps_max_length_tokens_and_marks_the_sample(tokenizers):
    tok = tokenizers["llama"]
    conv = _conv(f"{IMAGE_MARKER} Tell me a long story.", "Once upon a time " * 10)
    full = tokenize_conversation(tok, "vicuna", conv, 1, IMAGE_TOKENS, 4096)
    first_label = int(np.flatnonzero(full.labels != IGNORE_INDEX)[0])
    max_length = first_label + 20
    out = tokenize_conversation(tok, "vicuna", conv, 1, IMAGE_TOKENS, max_length)
    assert out.truncated
    assert len(out.input_ids) == len(out.labels) == max_length
    assert np.array_equal(out.input_ids, full.input_ids[:max_length])
    assert np.array_equal(out.labels, full.labels[:max_length])
    assert int((out.labels != IGNORE_INDEX).sum()) == 20
    assert int((out.input_ids == IMAGE_TOKEN_ID).sum()) == IMAGE_TOKENS  # the image survived whole


def test_truncation_that_cuts_an_image_skips_the_sample(tokenizers):
    tok = tokenizers["llama"]
    # the image comes late in the text, so max_length falls inside its positions
    conv = _conv("Look closely at this picture: " + IMAGE_MARKER, "Fine.")
    full = tokenize_conversation(tok, "vicuna", conv, 1, IMAGE_TOKENS, 4096)
    image_at = np.flatnonzero(full.input_ids == IMAGE_TOKEN_ID)
    for max_length in (image_at[0] + 1, image_at[-1]):
        with pytest.raises(SkipSample) as err:
            tokenize_conversation(tok, "vicuna", conv, 1, IMAGE_TOKENS, int(max_length))
        assert err.value.reason == "too_long_image_cut"


def test_truncation_that_leaves_no_reply_token_skips_the_sample(tokenizers):
    tok = tokenizers["llama"]
    conv = _conv("A question that is long enough.", "Short.")
    full = tokenize_conversation(tok, "vicuna", conv, 0, IMAGE_TOKENS, 4096)
    first_label = int(np.flatnonzero(full.labels != IGNORE_INDEX)[0])
    with pytest.raises(SkipSample) as err:
        tokenize_conversation(tok, "vicuna", conv, 0, IMAGE_TOKENS, first_label)
    assert err.value.reason == "too_long_no_labels"


# ---- tokenize_segments: tokens that don't fit the template's spans ----

def test_special_token_split_across_a_reply_boundary_is_misaligned(tokenizers):
    """A real straddle with the tiny Llama tokenizer: "</s>" is one added token, so when the
    prompt segment ends in "</" and the reply segment starts with "s>", that token covers
    characters of both segments."""
    tok = tokenizers["llama"]
    assert tok("x </s>", add_special_tokens=False)["input_ids"][-1] == tok.eos_token_id
    with pytest.raises(SkipSample) as err:
        tokenize_segments(tok, [("Question? </", False), ("s> The answer.", True)], IMAGE_TOKENS)
    assert err.value.reason == "label_misaligned"
    assert "'</s>'" in err.value.detail
    # the same kind of straddle at the reply's end
    with pytest.raises(SkipSample) as err:
        tokenize_segments(tok, [("Question? ", False), ("The answer.</", True), ("s>", False)], IMAGE_TOKENS)
    assert err.value.reason == "label_misaligned"


def _bpe_tokenizer(merges: list[tuple[str, str]]) -> PreTrainedTokenizerFast:
    """A byte-level BPE with a few real merges (the tiny presets have none)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(["<unk>", "</s>"] + alphabet)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="</s>")


def test_merged_token_across_a_reply_boundary_is_misaligned():
    """A BPE merge "ok" spanning prompt "...o" | reply "k..." is a real straddle."""
    tok = _bpe_tokenizer([("o", "k")])
    assert len(tok("ok", add_special_tokens=False)["input_ids"]) == 1
    with pytest.raises(SkipSample) as err:
        tokenize_segments(tok, [("Say o", False), ("k then</s>", True)], IMAGE_TOKENS)
    assert err.value.reason == "label_misaligned"
    assert "'ok'" in err.value.detail
    # the same text with the boundary elsewhere is fine: "ok" is inside the reply (and so is
    # the space before it: a reply owns the spaces that lead into it)
    out = tokenize_segments(tok, [("Say ", False), ("ok then</s>", True)], IMAGE_TOKENS)
    idx = np.flatnonzero(out.labels != IGNORE_INDEX)
    assert tok.decode(out.input_ids[idx].tolist()) == " ok then</s>"


def test_whitespace_glued_onto_the_first_reply_word_is_not_a_straddle():
    """BPE glues the separating space onto the next word ("Ġok"); the token's core lies in the
    reply, so it is labelled rather than skipped."""
    tok = _bpe_tokenizer([("Ġ", "o"), ("Ġo", "k")])
    assert tok.convert_ids_to_tokens(tok(" ok", add_special_tokens=False)["input_ids"]) == ["Ġok"]
    out = tokenize_segments(tok, [("Say:", False), (" ok</s>", True)], IMAGE_TOKENS)
    out2 = tokenize_segments(tok, [("Say: ", False), ("ok</s>", True)], IMAGE_TOKENS)
    for o in (out, out2):
        idx = np.flatnonzero(o.labels != IGNORE_INDEX)
        assert tok.convert_ids_to_tokens(o.input_ids[idx].tolist()) == ["Ġok", "</s>"]


def test_multibyte_character_tokens_stay_on_their_side_of_a_boundary(tokenizers):
    """Segments are Python strings, so a boundary can't fall inside a UTF-8 character: the byte
    tokens of "é" share the character's offsets and are labelled together."""
    tok = tokenizers["llama"]
    ids = tok("é", add_special_tokens=False, return_offsets_mapping=True)
    assert len(ids["input_ids"]) == 2 and ids["offset_mapping"] == [(0, 1), (0, 1)]
    out = tokenize_segments(tok, [("café", False), ("é!</s>", True)], IMAGE_TOKENS)
    labelled = out.labels != IGNORE_INDEX
    assert tok.decode(out.input_ids[labelled].tolist()) == "é!</s>"
    assert tok.decode(out.input_ids[~labelled].tolist()) == "café"


def test_reply_that_gets_no_token_is_misaligned(tokenizers):
    with pytest.raises(SkipSample) as err:
        tokenize_segments(tokenizers["llama"], [("Question?", False), ("", True), ("more", False)], IMAGE_TOKENS)
    assert err.value.reason == "label_misaligned"
    assert "no tokens" in err.value.detail


def test_segments_with_images_keep_character_offsets_right(tokenizers):
    """Offsets restart per chunk between images: labels must still land on the reply."""
    tok = tokenizers["llama"]
    segments = [(f"{IMAGE_MARKER}a{IMAGE_MARKER}{IMAGE_MARKER}bc ", False), ("reply</s>", True),
                (f" then {IMAGE_MARKER} ", False), ("again</s>", True)]
    out = tokenize_segments(tok, segments, 2)
    assert labelled_runs(tok, out) == [" reply</s>", " again</s>"]
    assert int((out.input_ids == IMAGE_TOKEN_ID).sum()) == 4 * 2
    text = tok.decode([i for i in out.input_ids.tolist() if i != IMAGE_TOKEN_ID])
    assert text == "abc reply</s> then  again</s>"
