"""instruct_llava_mix: the world's instructions with the spread of sample lengths of LLaVA-665K.

`instruct` has 665K's kinds of data, but each of its samples is one or two question turns
(~150–450 tokens in the miniatures' tokenizer, template included), so pad-to-longest wastes
little on it and a packing benchmark on it says little about LLaVA. This split keeps the
shares of LLaVA-1.5's mix (its paper's Table 7, thousands of entries in SHARES) and the shape
of each part:

- vqa (466K: VQAv2, GQA, OKVQA, OCR-VQA, A-OKVQA, TextCaps, RefCOCO, VG): short answers, each
  question with LLaVA-1.5's response-format prompt. OKVQA, A-OKVQA (multiple choice) and
  TextCaps are one question an image (97K); the others group an image's questions into one
  conversation (VQAv2 has ~5.4 questions an image).
- conversation (135K: LLaVA-Instruct's 58K conversations and 77K complex reasoning): several
  turns with full-sentence answers, often one of them a detailed description.
- detailed (23K: LLaVA-Instruct's detailed descriptions): one detailed caption.
- text_only (40K: ShareGPT's dialogues, no image): a few to dozens of turns, the long tail.

Lengths are meant in the miniatures' tokens: the tiny presets' tokenizer is byte-level (one
token a character), so the world's terse sentences span the range 665K's wordier ones span
in Llama tokens: from under 300 tokens (one short question under Vicuna's ~150-character
system prompt) to ~1.9K, within the 2048 LLaVA trains at (TEXT_BUDGET). The split is for
the miniatures: under a real tokenizer (~4 characters a token) every sample is short.

Every item draws from its own rng, as in build.py: an item depends only on (seed, index,
image_size), so tests regenerate any item to check its answers against its scenes.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..shards import ShardWriter
from . import questions as Q
from .build import WORLD_SIZES, Item, _image_turn, _rng, _say, check_args, plan_kinds
from .language import DETAILED_PROMPTS, detailed_caption
from .scenes import Scene, render_png, sample_scene

SPLIT = "instruct_llava_mix"
# Bump when the generated rows change: the split then lives in a new folder (prepare.py).
VERSION = 1
SHARES = {"vqa": 466, "conversation": 135, "detailed": 23, "text_only": 40}
SINGLE_VQA = 97 / 466         # OKVQA + A-OKVQA + TextCaps: one question an image
CHOICE_OF_SINGLE = 66 / 97    # A-OKVQA's multiple choice among those
VQA_ROUNDS = (2, 8)           # an image's grouped questions, mean 5 (VQAv2: 5.4)
CONVERSATION_TURNS = (2, 8)
DESCRIBE_IN_CONVERSATION = 0.5
# ShareGPT's dialogues are the mix's longest, often past LLaVA's 2048 (which cuts them): turns
# log-uniform in 2..40, so half run past ~9 turns, and TEXT_BUDGET cuts the longest as 2048 does
TEXT_TURNS = (2, 40)
# Characters of conversation text (each turn counted with TURN_FRAMING for its template
# markers) a sample may hold: with Vicuna's ~150-character system prompt and the image
# tokens, the longest sample stays under 2048 byte-level tokens, as LLaVA's 2048 cuts 665K.
TEXT_BUDGET = 1800
TURN_FRAMING = 12


def _chars(turns: list[dict]) -> int:
    return sum(len(t["text"]) + TURN_FRAMING for t in turns)


def _distinct_qas(scene: Scene, rng: random.Random, want: int) -> list[Q.QA]:
    """Up to `want` differently worded questions about `scene`, as an image's questions in
    VQAv2 or GQA differ; a small scene has few distinct ones, so the draws are bounded."""
    qas, seen = [], set()
    for _ in range(4 * want):
        qa = Q.ask(Q.CONVERSATION, scene, rng)
        if qa.question not in seen:
            seen.add(qa.question)
            qas.append(qa)
            if len(qas) == want:
                break
    return qas


def _fit(pairs: list[tuple[dict, dict]]) -> list[dict]:
    """The turns of as many (user, assistant) pairs, in order, as TEXT_BUDGET allows (always
    the first: one question makes a sample)."""
    turns: list[dict] = []
    for i, pair in enumerate(pairs):
        if i and _chars(turns) + _chars(list(pair)) > TEXT_BUDGET:
            break
        turns += pair
    return turns


def _user(text: str, first: bool) -> dict:
    return _image_turn(text) if first else {"role": "user", "text": text}


def _vqa(scene: Scene, rng: random.Random) -> tuple[list[dict], list[Q.QA], str]:
    if rng.random() < SINGLE_VQA:
        if rng.random() < CHOICE_OF_SINGLE:
            qa = Q.ask(Q.CHOICE, scene, rng)
            prompt, letter, _ = Q.multiple_choice(qa, rng)
            return [_image_turn(prompt), _say(letter)], [qa], "choice"
        qa = Q.ask(Q.CONVERSATION, scene, rng)
        return [_image_turn(Q.short_answer_prompt(qa)), _say(qa.answer)], [qa], "vqa"
    qas = _distinct_qas(scene, rng, rng.randint(*VQA_ROUNDS))
    turns = _fit([(_user(Q.short_answer_prompt(qa), j == 0), _say(qa.answer)) for j, qa in enumerate(qas)])
    return turns, qas[: len(turns) // 2], "vqa_rounds"


def _conversation(scene: Scene, rng: random.Random) -> tuple[list[dict], list[Q.QA | None]]:
    """Turns, and per turn pair its QA (None for a description turn)."""
    qas: list[Q.QA | None] = list(_distinct_qas(scene, rng, rng.randint(*CONVERSATION_TURNS)))
    if rng.random() < DESCRIBE_IN_CONVERSATION:
        # LLaVA-Instruct's conversations often ask for the whole picture somewhere along the way
        qas.insert(rng.randrange(len(qas) + 1), None)
    pairs = [(rng.choice(DETAILED_PROMPTS), detailed_caption(scene)) if qa is None else (qa.question, qa.sentence)
             for qa in qas]
    turns = _fit([(_user(q, j == 0), _say(a)) for j, (q, a) in enumerate(pairs)])
    return turns, qas[: len(turns) // 2]


def _text_only(rng: random.Random) -> tuple[list[dict], list[Q.QA]]:
    n = round(math.exp(rng.uniform(*map(math.log, TEXT_TURNS))))
    qas, seen = [], set()
    for _ in range(4 * n):
        gen = rng.choice(Q.TEXT_FACTS)
        fact = gen(rng)
        if fact.question not in seen:
            seen.add(fact.question)
            qas.append(Q.QA(gen.__name__.removeprefix("t_"), fact.question, fact.answer, fact.answer))
            if len(qas) == n:
                break
    turns = _fit([({"role": "user", "text": qa.question}, _say(qa.answer)) for qa in qas])
    return turns, qas[: len(turns) // 2]


def llava_mix_item(seed: int, index: int, kind: str, image_size: int) -> Item:
    rng = _rng(seed, SPLIT, index)
    sid = f"mix-{index:06d}"
    if kind == "text_only":
        turns, qas = _text_only(rng)
        return Item({"id": sid, "images": [], "conversations": turns, "source": "world/llava_mix/text_only",
                     "modality": "text"}, [], qas, kind)
    scene = sample_scene(rng, image_size)
    if kind == "vqa":
        turns, qas, sub = _vqa(scene, rng)
    elif kind == "conversation":
        (turns, qas), sub = _conversation(scene, rng), kind
    elif kind == "detailed":
        prompt = rng.choice(DETAILED_PROMPTS)
        turns, qas, sub = [_image_turn(prompt), _say(detailed_caption(scene))], [], kind
    else:
        raise ValueError(f"unknown {SPLIT} kind {kind!r}")
    return Item({"id": sid, "images": [render_png(scene)], "conversations": turns,
                 "source": f"world/llava_mix/{sub}", "modality": "image"}, [scene], qas, kind)


def llava_mix_items(seed: int, n: int, image_size: int) -> Iterator[Item]:
    for i, kind in enumerate(plan_kinds(SHARES, n, f"{seed}/{SPLIT}/plan")):
        yield llava_mix_item(seed, i, kind, image_size)


def build_llava_mix(out_dir: str | Path, *, seed: int = 0, size: str = "tiny", image_size: int = 64) -> dict:
    """Write the split as a shard dir at out_dir (as many rows as the world's `instruct`);
    return its manifest. Raises ConfigError for an unknown size or a bad image size."""
    check_args(seed, size, image_size)
    writer, sources = ShardWriter(out_dir), Counter()
    for item in llava_mix_items(seed, WORLD_SIZES[size][1], image_size):
        writer.add(item.sample)
        sources[item.sample["source"]] += 1
    return writer.close({"split": SPLIT, "version": VERSION,
                         "world": {"seed": seed, "size": size, "image_size": image_size},
                         "sources": dict(sorted(sources.items()))})
