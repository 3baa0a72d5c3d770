"""The world's GQA set: mostly relational questions with GQA's question types and full
answers, written in LLaVA's question file + GQA's testdev_balanced_questions.json layout."""

from __future__ import annotations

import random
from pathlib import Path

from vlmsweep.data.world import questions as Q
from vlmsweep.data.world.language import a_or_an, counts, plural
from vlmsweep.data.world.scenes import KINDS, Scene

from ..base import SINGLE_WORD
from ..world_common import (
    GQA_PER_IMAGE,
    WorldSet,
    _anchors,
    _col,
    _position_pairs,
    _row,
    _shape_at,
    dump_json,
    dump_jsonl,
    each_image,
)
from .layout import ANNOTATIONS, IMAGES, QUESTIONS

RELATIONS = {"to the left of": lambda a, b: _col(a) < _col(b),
             "to the right of": lambda a, b: _col(a) > _col(b),
             "above": lambda a, b: _row(a) < _row(b),
             "below": lambda a, b: _row(a) > _row(b)}


def _in_direction(scene: Scene, b, rel: str) -> list:
    return [a for a in scene.objects if RELATIONS[rel](a, b)]


def _g_rel_query(scene: Scene, rng: random.Random) -> dict | None:
    options = [(found[0], rel, ref) for b, ref in _anchors(scene) for rel in RELATIONS
               if len(found := _in_direction(scene, b, rel)) == 1]
    if not options:
        return None
    a, rel, ref = rng.choice(options)
    if rng.random() < 0.5:
        return {"question": f"What colour is the shape {rel} {ref}?", "answer": a.colour,
                "fullAnswer": f"The shape {rel} {ref} is {a.colour}.",
                "types": {"structural": "query", "semantic": "rel", "detailed": "relColor"}}
    return {"question": f"What shape is {rel} {ref}?", "answer": a.kind,
            "fullAnswer": f"The shape {rel} {ref} is {a_or_an(a.kind)} {a.kind}.",
            "types": {"structural": "query", "semantic": "rel", "detailed": "relShape"}}


def _g_rel_verify(scene: Scene, rng: random.Random) -> dict | None:
    options = [(b, ref, rel) for b, ref in _anchors(scene) for rel in RELATIONS
               if _in_direction(scene, b, rel)]
    if not options:
        return None
    b, ref, rel = rng.choice(options)
    there = sorted({a.kind for a in _in_direction(scene, b, rel)})
    absent = [k for k in KINDS if k not in there]
    yes = rng.random() < 0.5 or not absent
    kind = rng.choice(there if yes else absent)
    return {"question": f"Is there {a_or_an(kind)} {kind} {rel} {ref}?", "answer": "yes" if yes else "no",
            "fullAnswer": f"{'Yes' if yes else 'No'}, there is {'a' if yes else 'no'} {kind} {rel} {ref}.",
            "types": {"structural": "verify", "semantic": "rel", "detailed": "existRel"}}


def _g_choose(scene: Scene, rng: random.Random) -> dict | None:
    pairs = _position_pairs(scene)
    if not pairs:
        return None
    a, ra, b, rb, axis = rng.choice(pairs)
    if rng.random() < 0.5:
        a, ra, b, rb = b, rb, a, ra
    if axis == "x":
        ans = "left" if _col(a) < _col(b) else "right"
        q = f"Is {ra} to the left or to the right of {rb}?"
        full = f"{ra.capitalize()} is to the {ans} of {rb}."
    else:
        ans = "above" if _row(a) < _row(b) else "below"
        q = f"Is {ra} above or below {rb}?"
        full = f"{ra.capitalize()} is {ans} {rb}."
    return {"question": q, "answer": ans, "fullAnswer": full, "key": (axis, *sorted((ra, rb))),
            "types": {"structural": "choose", "semantic": "rel", "detailed": "chooseRel"}}


def _g_both(scene: Scene, rng: random.Random) -> dict | None:
    present = sorted({o.kind for o in scene.objects})
    if rng.random() < 0.5 and len(present) >= 2:
        k1, k2 = rng.sample(present, 2)
    else:
        k1, k2 = rng.sample(list(KINDS), 2)
    yes = bool(counts(scene, kind=k1) and counts(scene, kind=k2))
    return {"question": f"Are there both {plural(k1)} and {plural(k2)} in the image?",
            "answer": "yes" if yes else "no",
            "fullAnswer": f"{'Yes' if yes else 'No'}, there are {'both' if yes else 'not both'} "
                          f"{plural(k1)} and {plural(k2)}.",
            "types": {"structural": "logical", "semantic": "obj", "detailed": "logicAnd"}}


def _g_same_colour(scene: Scene, rng: random.Random) -> dict | None:
    anchors = _anchors(scene)
    if len(anchors) < 2:
        return None
    (a, ra), (b, rb) = rng.sample(anchors, 2)
    yes = a.colour == b.colour
    return {"question": f"Are {ra} and {rb} the same colour?", "answer": "yes" if yes else "no",
            "fullAnswer": f"{'Yes' if yes else 'No'}, {ra} is {a.colour} and {rb} is {b.colour}.",
            "types": {"structural": "compare", "semantic": "attr", "detailed": "sameColor"}}


def _g_shape_at(scene: Scene, rng: random.Random) -> dict | None:
    qa = _shape_at(scene, rng)
    return {"question": qa.question, "answer": qa.answer, "fullAnswer": qa.sentence,
            "types": {"structural": "query", "semantic": "obj", "detailed": "positionQuery"}}


def _g_colour(scene: Scene, rng: random.Random) -> dict | None:
    qa = Q.q_colour(scene, rng)
    return {"question": qa.question, "answer": qa.answer, "fullAnswer": qa.sentence,
            "types": {"structural": "query", "semantic": "attr", "detailed": "attrColor"}}


GQA_RELATIONAL = (_g_rel_query, _g_rel_verify, _g_choose)
GQA_OTHER = (_g_both, _g_same_colour, _g_shape_at, _g_colour)


def build(root: Path, seed: int, scale: int, image_size: int) -> dict:
    out = WorldSet(root, "gqa")
    rows, anns = [], {}
    for i, rng, scene in each_image("gqa", seed, scale, image_size):
        image = f"{i:05d}.png"
        out.image(f"{IMAGES[0]}/{image}", scene)
        made: list[dict] = []
        keys: set = set()
        for _ in range(100):
            if len(made) == GQA_PER_IMAGE:
                break
            # Relational questions where the scene allows them, as GQA is mostly relations.
            gens = rng.sample(GQA_RELATIONAL, 3) if rng.random() < 0.7 else ()
            for gen in (*gens, *rng.sample(GQA_OTHER, len(GQA_OTHER))):
                q = gen(scene, rng)
                if q is not None:
                    break
            key = q.pop("key", q["question"])  # "a left or right of b" == "b ... of a"
            if key not in keys:
                keys.add(key)
                made.append(q)
        for j, q in enumerate(made):
            qid = str(i * 10 + j)
            rows.append({"question_id": qid, "image": image, "text": f"{q['question']}\n{SINGLE_WORD}",
                         "category": "default"})
            # the fields GQA's eval.py reads, so it runs on these files as on the real ones (its
            # answer-distribution score needs some "global" group: the query questions have one)
            query = q["types"]["structural"] == "query"
            anns[qid] = {"question": q["question"], "answer": q["answer"], "fullAnswer": q["fullAnswer"],
                         "imageId": f"{i:05d}", "isBalanced": True, "types": q["types"],
                         "groups": {"global": q["types"]["detailed"] if query else None, "local": None},
                         "semantic": [], "entailed": [], "equivalent": [qid]}
    dump_jsonl(out.dir / QUESTIONS, rows)
    dump_json(out.dir / "data" / ANNOTATIONS, anns)
    return out.finish(len(rows), {"questions": QUESTIONS, "annotations": f"data/{ANNOTATIONS}",
                                  "images": f"{IMAGES[0]}/"})
