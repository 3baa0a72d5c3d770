"""The world's MME set: a Yes and a No question per image for each subtask, written as MME's
release folder (<subtask>/<image>.png + <image>.txt) plus LLaVA's llava_mme.jsonl."""

from __future__ import annotations

import random
from pathlib import Path

from vlmsweep.data.world import questions as Q
from vlmsweep.data.world.language import a_or_an, count_phrase, counts, number_word, plural, reference
from vlmsweep.data.world.scenes import COLOURS, KINDS, WORDS, Scene

from ..base import SINGLE_WORD
from ..world_common import (
    ALL_PAIRS,
    MME_SUBTASKS,
    MME_TINY_IMAGES,
    WorldSet,
    _col,
    _pairs,
    _position_pairs,
    _row,
    dump_jsonl,
    start,
)
from .layout import QUESTIONS, RELEASE, YES_NO


def _other(rng: random.Random, value, values):
    return rng.choice([v for v in values if v != value])


def _mme_pair(sub: str, scene: Scene, rng: random.Random) -> tuple[str, str]:
    """(question whose answer is Yes, question whose answer is No), without the suffix."""
    if sub == "existence":
        present = _pairs(scene)
        (c, k) = rng.choice(present)
        (c2, k2) = rng.choice([p for p in ALL_PAIRS if p not in present])
        return (f"Is there {a_or_an(c)} {c} {k} in this image?",
                f"Is there {a_or_an(c2)} {c2} {k2} in this image?")
    if sub == "count":
        if rng.random() < 0.3:
            n, noun = len(scene.objects), "object"
        else:
            noun = rng.choice(sorted({o.kind for o in scene.objects}))
            n = counts(scene, kind=noun)
        m = n + 1 if n == 1 or rng.random() < 0.5 else n - 1

        def ask(k):
            return f"{'Is' if k == 1 else 'Are'} there exactly {count_phrase(k, noun, article=False)} in this image?"
        return ask(n), ask(m)
    if sub == "position":
        a, ra, b, rb, axis = rng.choice(_position_pairs(scene))
        if axis == "x":
            side = "left" if _col(a) < _col(b) else "right"
            return (f"Is {ra} on the {side} side of {rb}?",
                    f"Is {ra} on the {Q.OPPOSITES[side]} side of {rb}?")
        side = "above" if _row(a) < _row(b) else "below"
        return f"Is {ra} {side} {rb}?", f"Is {ra} {'below' if side == 'above' else 'above'} {rb}?"
    if sub == "color":
        obj = rng.choice(scene.objects)
        ref = reference(scene, obj, avoid="colour")
        return f"Is {ref} {obj.colour}?", f"Is {ref} {_other(rng, obj.colour, COLOURS)}?"
    if sub == "OCR":
        return (f'Is the word "{scene.word}" written in this image?',
                f'Is the word "{_other(rng, scene.word, WORDS)}" written in this image?')
    if sub == "commonsense_reasoning":
        obj = rng.choice(scene.objects)
        ref = reference(scene, obj)
        if obj.kind in Q.SIDES and rng.random() < 0.5:
            sides = Q.SIDES[obj.kind]
            return (f"Does {ref} have {number_word(sides)} sides?",
                    f"Does {ref} have {number_word(_other(rng, sides, range(3, 7)))} sides?")
        round_q, corners_q = f"Is {ref} round?", f"Does {ref} have corners?"
        return (round_q, corners_q) if obj.kind == "circle" else (corners_q, round_q)
    if sub == "numerical_calculation":
        if rng.random() < 0.3:
            n = len(scene.objects)
            total, q = 2 * n, "Is the number of objects in this image multiplied by two equal to {}?"
        else:
            present = sorted({o.kind for o in scene.objects})
            k1 = rng.choice(present)
            k2 = _other(rng, k1, KINDS)
            total = counts(scene, kind=k1) + counts(scene, kind=k2)
            q = f"Is the number of {plural(k1)} plus the number of {plural(k2)} in this image equal to {{}}?"
        wrong = total + 1 if total == 0 or rng.random() < 0.5 else total - 1
        return q.format(total), q.format(wrong)
    raise ValueError(f"unknown MME subtask {sub!r}")


def build(root: Path, seed: int, scale: int, image_size: int) -> dict:
    out = WorldSet(root, "MME")
    rows, per_subtask = [], {}
    for sub in MME_SUBTASKS:
        for i in range(MME_TINY_IMAGES * scale):
            rng, scene = start(seed, f"mme/{sub}", i, image_size)
            image = f"{sub}/{i:04d}.png"
            out.image(f"{RELEASE}/{image}", scene)
            yes_q, no_q = _mme_pair(sub, scene, rng)
            pair = [(yes_q, "Yes"), (no_q, "No")]
            rng.shuffle(pair)
            # MME's own question text ends "Please answer yes or no."; LLaVA adds its prompt
            (out.dir / RELEASE / sub / f"{i:04d}.txt").write_text("".join(f"{q} {YES_NO}\t{a}\n" for q, a in pair))
            rows += [{"question_id": image, "image": image, "text": f"{q} {YES_NO}\n{SINGLE_WORD}", "category": sub}
                     for q, _ in pair]
        per_subtask[sub] = 2 * MME_TINY_IMAGES * scale
    dump_jsonl(out.dir / QUESTIONS, rows)
    return out.finish(len(rows), {"questions": QUESTIONS, "release": f"{RELEASE}/"}, categories=per_subtask)
