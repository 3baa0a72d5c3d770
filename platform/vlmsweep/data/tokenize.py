"""Conversation → token ids and labels, with labels taken from character spans.

The template marks which rendered text is an assistant reply. The text is tokenized with
offsets, and a token is labelled when its characters (leading/trailing whitespace aside,
since SentencePiece and BPE glue the separating space onto the next word) lie inside a
reply span. A token that straddles a span boundary, or a reply that gets no token, means
the tokenizer and template disagree: the sample is skipped with a reason, and counted.

Each `<image>` becomes `image_tokens` copies of IMAGE_TOKEN_ID (between the two delimiter
ids, with `model.llm.image_delimiters`), so lengths (for packing and truncation) are known
before the model sees the sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlmsweep import IMAGE_MARKER
from vlmsweep.models.templates import SpecialTokens, TemplateError, get_template, render
from vlmsweep.models.vlm import IGNORE_INDEX, IMAGE_TOKEN_ID


# Bumped when the same conversation would tokenize or label differently: stage ids include
# it, so stages trained on the old labels are never reused (v2: replies own leading spaces).
LABELS_VERSION = 2


class SkipSample(Exception):
    """A sample that can't be used; `reason` is a short key used in skip counts."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class Tokenized:
    input_ids: np.ndarray   # int64, IMAGE_TOKEN_ID at image positions
    labels: np.ndarray      # int64, IGNORE_INDEX where nothing is learned (not shifted)
    truncated: bool = False


def special_tokens(tokenizer) -> SpecialTokens:
    return SpecialTokens(bos=tokenizer.bos_token, eos=tokenizer.eos_token)


def _core(text: str, start: int, end: int) -> tuple[int, int]:
    """The token's span without surrounding whitespace (empty spans stay as they are)."""
    s, e = start, end
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return (s, e) if s < e else (start, end)


def reply_owns_leading_spaces(segments: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Move the spaces ending a prompt segment onto the reply that follows it.

    A BPE tokenizer glues a space to the next word (" Yes" -> "ĠYes") or not ("Ġ", "Yes"),
    depending on its vocabulary, so which tokens end "ASSISTANT: Yes" depends on the reply.
    A generation prompt can't know the reply; it ends at "ASSISTANT:", and the model learns
    to produce the space itself, as part of every reply.
    """
    out = list(segments)
    for i in range(len(out) - 1):
        (text, trainable), (reply, reply_trainable) = out[i], out[i + 1]
        if not trainable and reply_trainable and text.endswith(" "):
            core = text.rstrip(" ")
            out[i], out[i + 1] = (core, False), (text[len(core):] + reply, True)
    return out


def tokenize_segments(tokenizer, segments: list[tuple[str, bool]], image_tokens: int,
                      delimiters: tuple[int, int] | None = None) -> Tokenized:
    segments = reply_owns_leading_spaces(segments)
    text, spans, pos = "", [], 0
    for seg, trainable in segments:
        if trainable:
            spans.append((pos, pos + len(seg)))
        text += seg
        pos += len(seg)
    ids: list[int] = []
    labels: list[int] = []
    hits = [0] * len(spans)
    base = 0
    for k, chunk in enumerate(text.split(IMAGE_MARKER)):
        if k:
            span = [IMAGE_TOKEN_ID] * image_tokens
            span = [delimiters[0], *span, delimiters[1]] if delimiters else span
            ids += span
            labels += [IGNORE_INDEX] * len(span)
            base += len(IMAGE_MARKER)
        enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
        for tok, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
            s, e = _core(text, base + s, base + e)
            label = IGNORE_INDEX
            for i, (a, b) in enumerate(spans):
                if a <= s and e <= b and (s < e or a <= s < b):
                    label, hits[i] = tok, hits[i] + 1
                    break
                if s < b and a < e:  # overlaps a reply but isn't inside it
                    raise SkipSample("label_misaligned",
                                     f"token {text[s:e]!r} crosses the reply boundary at chars {a}-{b}")
            ids.append(tok)
            labels.append(label)
        base += len(chunk)
    if not all(hits):
        raise SkipSample("label_misaligned", "an assistant reply received no tokens")
    return Tokenized(np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64))


def tokenize_conversation(tokenizer, template: str, conversation: list[dict], num_images: int,
                          image_tokens: int, max_length: int, overlong: str = "truncate",
                          delimiters: tuple[int, int] | None = None) -> Tokenized:
    """Render, tokenize and check one sample; raises SkipSample with the reason it can't be used."""
    markers = sum(t["text"].count(IMAGE_MARKER) for t in conversation if t["role"] == "user")
    if markers != num_images:
        raise SkipSample("image_count_mismatch", f"{markers} <image> markers, {num_images} images")
    if any(IMAGE_MARKER in t["text"] for t in conversation if t["role"] != "user"):
        raise SkipSample("image_marker_outside_user_turn")
    try:
        segments = render(template, conversation, special_tokens(tokenizer))
    except TemplateError as err:
        raise SkipSample("bad_conversation", str(err)) from None
    out = tokenize_segments(tokenizer, segments, image_tokens, delimiters)
    if len(out.input_ids) <= max_length:
        return out
    if overlong == "drop":
        raise SkipSample("too_long", f"{len(out.input_ids)} tokens > max_length {max_length}")
    ids, labels = out.input_ids[:max_length], out.labels[:max_length]
    # cutting through an image would leave the model a partial image: the sample is unusable
    image_positions = np.flatnonzero(out.input_ids == IMAGE_TOKEN_ID)
    if image_positions.size and image_positions[-1] + (1 if delimiters else 0) >= max_length:
        raise SkipSample("too_long_image_cut", f"{len(out.input_ids)} tokens, an image crosses max_length {max_length}")
    if not (labels != IGNORE_INDEX).any():
        raise SkipSample("too_long_no_labels", f"no reply token within max_length {max_length}")
    return Tokenized(ids, labels, truncated=True)


def prompt_ids(tokenizer, template: str, conversation: list[dict], image_tokens: int,
               delimiters: tuple[int, int] | None = None) -> np.ndarray:
    """Token ids of a conversation up to the assistant's reply, exactly as training saw them.

    The spaces a template puts before a reply ("ASSISTANT: ") are the reply's in training
    (see reply_owns_leading_spaces), so the prompt ends before them.
    """
    segments = render(template, conversation, special_tokens(tokenizer), for_generation=True)
    segments[-1] = (segments[-1][0].rstrip(" "), False)
    return tokenize_segments(tokenizer, [(s, False) for s, _ in segments], image_tokens, delimiters).input_ids


def stop_token_id(tokenizer, template: str) -> int:
    stop = get_template(template).stop(special_tokens(tokenizer))
    ids = tokenizer.convert_tokens_to_ids([stop])
    return int(ids[0]) if ids and ids[0] is not None else int(tokenizer.eos_token_id)
