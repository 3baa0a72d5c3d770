"""The world's POPE set: yes/no object existence in three splits, written as LLaVA's
llava_pope_test.jsonl + POPE's coco/coco_pope_<split>.json + val2014/."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from vlmsweep.data.world.language import a_or_an
from vlmsweep.data.world.scenes import Scene

from ..base import SINGLE_WORD
from ..world_common import ALL_PAIRS, POPE_PER_IMAGE, TINY_IMAGES, WorldSet, _pairs, _rng, dump_jsonl, start
from .layout import IMAGES, LABELS, PREFIX, QUESTIONS, SPLITS


def pope_question(colour: str, kind: str) -> str:
    return f"Is there {a_or_an(colour)} {colour} {kind} in the image?"


def _pope_negatives(split: str, scene: Scene, rng: random.Random, freq: Counter,
                    cooc: Counter) -> list[tuple[str, str]]:
    present = _pairs(scene)
    absent = [p for p in ALL_PAIRS if p not in present]
    if split == "random":
        return rng.sample(absent, POPE_PER_IMAGE)
    tie = {p: rng.random() for p in absent}
    if split == "popular":  # the most frequent objects over the whole set
        key = lambda p: (-freq[p], tie[p])
    else:  # adversarial: share a colour or shape with what's there, then co-occur most
        def key(p):
            shared = sum((p[0] == c) + (p[1] == k) for c, k in present)
            return (-shared, -sum(cooc[(p, q)] for q in present), tie[p])
    return sorted(absent, key=key)[:POPE_PER_IMAGE]


def build(root: Path, seed: int, scale: int, image_size: int) -> dict:
    out = WorldSet(root, "pope")
    n = TINY_IMAGES["pope"] * scale
    starts = [start(seed, "pope", i, image_size) for i in range(n)]
    freq, cooc = Counter(), Counter()
    for _, scene in starts:
        ps = _pairs(scene)
        freq.update(ps)
        cooc.update((p, q) for p in ps for q in ps if p != q)
    images, positives = [], []
    for i, (rng, scene) in enumerate(starts):
        images.append(f"{i:05d}.png")
        out.image(f"{IMAGES[0]}/{images[-1]}", scene)
        positives.append(rng.sample(_pairs(scene), POPE_PER_IMAGE))
    questions, labels, qid = [], {}, 0
    for split in SPLITS:
        rows = []
        for i, (_, scene) in enumerate(starts):
            rng = _rng(seed, f"pope/{split}", i)
            items = [(p, "yes") for p in positives[i]] + \
                [(p, "no") for p in _pope_negatives(split, scene, rng, freq, cooc)]
            rng.shuffle(items)
            for (colour, kind), label in items:
                qid += 1
                text = pope_question(colour, kind)
                questions.append({"question_id": qid, "image": images[i], "text": f"{text}\n{SINGLE_WORD}",
                                  "category": split})
                rows.append({"question_id": qid, "image": images[i], "text": text, "label": label})
        dump_jsonl(out.dir / LABELS / f"{PREFIX}{split}.json", rows)
        labels[split] = len(rows)
    dump_jsonl(out.dir / QUESTIONS, questions)
    files = {"questions": QUESTIONS, "labels": {s: f"{LABELS}/{PREFIX}{s}.json" for s in SPLITS},
             "images": f"{IMAGES[0]}/"}
    return out.finish(len(questions), files, splits=labels)
