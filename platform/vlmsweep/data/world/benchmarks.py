"""Held-out stand-ins for the TinyLLaVA benchmarks, in the file formats LLaVA-1.5's
evaluation reads, so the evaluator runs unchanged on these or on the real files.

`build_benchmarks(out_dir, ...)` writes `out_dir/<bench>/` for each of BENCHMARKS:

  questions.jsonl   LLaVA eval question file, one object per line: question_id, image
                    (relative to images/; absent for text-only ScienceQA items), text (the
                    bare question: the evaluator appends the response-format prompt),
                    plus category / ocr_tokens where that benchmark's file has them.
  images/           the PNGs.
  answer keys       in the benchmark's own format (annotations.json; ScienceQA's
                    problems.json + pid_splits.json; POPE's annotations/<split>.json).

and `out_dir/benchmarks.json` (counts and file names per benchmark), written last.

Every image comes from a scene drawn by its own `random.Random(f"{seed}/bench/<unit>/{i}")`:
training uses other split names ("scene", "instruct"), so benchmark images are new
scenes, and `bench_scene` / `scene_for_image` regenerate the scene behind any item (tests
re-derive every answer from it). Items depend only on (seed, index, image_size), except
POPE's popular/adversarial negatives, which are chosen from statistics over the whole set.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from . import questions as Q
from .build import WORLD_SIZES, check_args
from .language import a_or_an, count_phrase, counts, number_word, plural, reference
from .scenes import (BACKGROUNDS, COLOURS, KINDS, SIZES, WORD_PROB, WORDS, Scene, object_limit,
                     render_png, sample_scene)

BENCHMARKS = ("vqav2", "gqa", "textvqa", "scienceqa", "pope", "mme", "mmmu")
SCALE = {"tiny": 1, "small": 5, "medium": 25}
assert set(SCALE) == set(WORLD_SIZES)
# Images per benchmark at tiny (x SCALE), and questions per image where more than one.
TINY_IMAGES = {"vqav2": 16, "gqa": 16, "textvqa": 50, "scienceqa": 50, "pope": 5, "mmmu": 50}
VQA_PER_IMAGE = GQA_PER_IMAGE = 3
POPE_SPLITS = ("random", "popular", "adversarial")
POPE_PER_IMAGE = 3  # yes questions per image (and as many no questions) in every split
MME_SUBTASKS = ("existence", "count", "position", "color", "OCR", "commonsense_reasoning",
                "numerical_calculation")
MME_TINY_IMAGES = 4  # per subtask; each image has one Yes and one No question
MME_SUFFIX = " Please answer yes or no."  # part of MME's own question text
SQA_IMAGE_PROB = 0.8
LETTERS = "ABCD"


def _rng(seed: int, unit: str, index: int) -> random.Random:
    # Same construction as build._rng; "bench/..." never collides with a training split.
    return random.Random(f"{seed}/bench/{unit}/{index}")


# ---- scenes ----------------------------------------------------------------------------

def _scene(rng: random.Random, image_size: int, *, min_objects: int = 1,
           word: bool | None = None) -> Scene:
    has_word = rng.random() < WORD_PROB if word is None else word
    limit = object_limit(image_size, has_word)
    n = rng.randint(min(min_objects, limit), limit)
    return sample_scene(rng, image_size, n_objects=n, word=has_word)


def _col(o) -> int:
    return 0 if "left" in o.position else 2 if "right" in o.position else 1


def _row(o) -> int:
    return 0 if o.position.startswith("top") else 2 if o.position.startswith("bottom") else 1


def _anchors(scene: Scene) -> list[tuple]:
    """(object, reference) for objects nameable without their position."""
    return [(o, r) for o in scene.objects if (r := reference(scene, o, avoid="position"))]


def _position_pairs(scene: Scene) -> list[tuple]:
    """(a, ref_a, b, ref_b, axis) for nameable objects in different columns / rows."""
    out = []
    anchors = _anchors(scene)
    for i, (a, ra) in enumerate(anchors):
        for b, rb in anchors[i + 1:]:
            if _col(a) != _col(b):
                out.append((a, ra, b, rb, "x"))
            if _row(a) != _row(b):
                out.append((a, ra, b, rb, "y"))
    return out


def unambiguous_position(scene: Scene, obj) -> bool:
    """Whether "at the top" etc. names obj alone under either reading: the grid cell, or
    the whole top row / left column. Corners and the centre always do."""
    if obj.position in ("top", "bottom"):
        return sum(_row(o) == _row(obj) for o in scene.objects) == 1
    if obj.position in ("left", "right"):
        return sum(_col(o) == _col(obj) for o in scene.objects) == 1
    return True


def _shape_at(scene: Scene, rng: random.Random) -> Q.QA | None:
    """Q.q_shape_at, asked only about positions that can't be misread (see above). Some
    object always qualifies: with no corner or centre taken, each edge cell is alone in
    its row / column."""
    objs = [o for o in scene.objects if unambiguous_position(scene, o)]
    if not objs:
        return None
    return Q.q_shape_at(replace(scene, objects=(rng.choice(objs),)), rng)


def _pairs(scene: Scene) -> list[tuple[str, str]]:
    """Distinct (colour, kind) pairs present, in reading order."""
    return list(dict.fromkeys((o.colour, o.kind) for o in scene.objects))


def _until(rng: random.Random, make: Callable[[], Scene], ok: Callable[[Scene], bool]) -> Scene:
    for _ in range(1000):
        scene = make()
        if ok(scene):
            return scene
    raise RuntimeError("could not draw a scene with the required property")


def _sqa_scene(rng: random.Random, s: int) -> Scene | None:
    return _scene(rng, s) if rng.random() < SQA_IMAGE_PROB else None


SCENES: dict[str, Callable[[random.Random, int], Scene | None]] = {
    "vqav2": lambda rng, s: _scene(rng, s),
    "gqa": lambda rng, s: _scene(rng, s, min_objects=3),
    "textvqa": lambda rng, s: _scene(rng, s, word=True),
    "scienceqa": _sqa_scene,
    "pope": lambda rng, s: _until(rng, lambda: _scene(rng, s, min_objects=3),
                                  lambda sc: len(_pairs(sc)) >= POPE_PER_IMAGE),
    "mmmu": lambda rng, s: _scene(rng, s, min_objects=3),
    "mme/existence": lambda rng, s: _scene(rng, s),
    "mme/count": lambda rng, s: _scene(rng, s),
    "mme/position": lambda rng, s: _until(rng, lambda: _scene(rng, s, min_objects=2),
                                          lambda sc: bool(_position_pairs(sc))),
    "mme/color": lambda rng, s: _scene(rng, s),
    "mme/OCR": lambda rng, s: _scene(rng, s, word=True),
    "mme/commonsense_reasoning": lambda rng, s: _scene(rng, s),
    "mme/numerical_calculation": lambda rng, s: _scene(rng, s),
}


def _start(seed: int, unit: str, index: int, image_size: int) -> tuple[random.Random, Scene | None]:
    rng = _rng(seed, unit, index)
    return rng, SCENES[unit](rng, image_size)


def bench_scene(seed: int, unit: str, index: int, image_size: int) -> Scene | None:
    """The scene behind image `index` of `unit` (a benchmark, or 'mme/<subtask>');
    None for a text-only ScienceQA item."""
    return _start(seed, unit, index, image_size)[1]


def scene_for_image(seed: int, bench: str, image: str, image_size: int) -> Scene:
    """The scene drawn in `image` (a questions.jsonl `image` field) of benchmark `bench`."""
    if bench == "scienceqa":  # "<pid>/image.png"
        return bench_scene(seed, bench, int(image.split("/")[0]), image_size)
    if bench == "mme":  # "<subtask>/0003.png"
        sub, name = image.split("/")
        return bench_scene(seed, f"mme/{sub}", int(name.removesuffix(".png")), image_size)
    return bench_scene(seed, bench, int(image.removesuffix(".png")), image_size)


# ---- writing ---------------------------------------------------------------------------

def _dump_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")


def _dump_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


class _Bench:
    """One benchmark dir being written: images and question rows."""

    def __init__(self, root: Path, name: str):
        self.dir = root / name
        shutil.rmtree(self.dir, ignore_errors=True)  # no stale files from a bigger build
        (self.dir / "images").mkdir(parents=True)
        self.rows: list[dict] = []
        self.images = 0

    def image(self, name: str, scene: Scene) -> str:
        path = self.dir / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render_png(scene))
        self.images += 1
        return name

    def finish(self, **files) -> dict:
        _dump_jsonl(self.dir / "questions.jsonl", self.rows)
        return {"questions": len(self.rows), "images": self.images,
                "files": {"questions": "questions.jsonl", "images": "images/", **files}}


def _mc(rng: random.Random, answer: str, distractors, n: int) -> tuple[list[str], int]:
    """n options (answer + n-1 distinct distractors), shuffled; returns (options, index)."""
    pool = sorted(dict.fromkeys(d for d in distractors if d != answer))
    options = rng.sample(pool, min(n - 1, len(pool))) + [answer]
    rng.shuffle(options)
    return options, options.index(answer)


def _near_numbers(n: int) -> list[str]:
    return [str(k) for k in range(max(0, n - 3), n + 4) if k != n]


# ---- VQAv2 -----------------------------------------------------------------------------

def _human_answers(rng: random.Random, answer: str, variants: list[str],
                   wrong: list[str]) -> list[dict]:
    """Ten annotator answers: 6-10 exactly the answer (always the majority), the rest
    equivalent variants ('two', '2 circles', 'Red') and at most two wrong ones."""
    n_exact = rng.randint(6, 10)
    n_wrong = rng.randint(0, min(2, 10 - n_exact)) if wrong else 0
    pool = [answer] * n_exact + [rng.choice(wrong) for _ in range(n_wrong)]
    pool += [rng.choice(variants) if variants else answer for _ in range(10 - len(pool))]
    rng.shuffle(pool)
    return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(pool)]


def _number_variants(n: int, noun_one: str, noun_many: str) -> tuple[list[str], list[str]]:
    variants = [number_word(n) if n else "none", f"{n} {noun_one if n == 1 else noun_many}"]
    wrong = [str(n + 1)] + ([str(n - 1)] if n else [])
    return variants, wrong


def _vqa_question(cat: str, scene: Scene, rng: random.Random) -> tuple[str, str, str, list, list]:
    """(question, answer, answer_type, variants, wrong) for a category."""
    if cat == "colour":
        qa = Q.q_background(scene, rng) if rng.random() < 0.2 else Q.q_colour(scene, rng)
        return (qa.question, qa.answer, "other", [qa.answer.capitalize()],
                [c for c in qa.domain if c != qa.answer])
    if cat == "shape":
        qa = _shape_at(scene, rng)
        return (qa.question, qa.answer, "other",
                [f"{a_or_an(qa.answer)} {qa.answer}", qa.answer.capitalize()],
                [k for k in KINDS if k != qa.answer])
    if cat == "count":
        qa = rng.choice([Q.q_count_kind, Q.q_count_colour, Q.q_count_all])(scene, rng)
        n = int(qa.answer)
        if qa.kind == "count_kind":
            kind = next(k for k in KINDS if f" {plural(k)} " in f" {qa.question} ")
            one, many = kind, plural(kind)
        elif qa.kind == "count_colour":
            colour = qa.question.split()[2]
            one, many = f"{colour} object", f"{colour} objects"
        else:
            one, many = "object", "objects"
        return (qa.question, qa.answer, "number", *_number_variants(n, one, many))
    # yes/no: existence, an object's colour, or the background
    pick = rng.random()
    if pick < 0.4:
        qa = Q.q_exists(scene, rng)
        question, yes = qa.question, qa.answer == "Yes"
    elif pick < 0.8:
        obj = rng.choice(scene.objects)
        ref = reference(scene, obj, avoid="colour")
        yes = rng.random() < 0.5
        colour = obj.colour if yes else rng.choice([c for c in COLOURS if c != obj.colour])
        question = f"Is {ref} {colour}?"
    else:
        yes = rng.random() < 0.5
        bg = scene.background if yes else rng.choice([b for b in BACKGROUNDS if b != scene.background])
        question = f"Is the background {bg}?"
    answer = "yes" if yes else "no"
    return question, answer, "yes/no", [answer.capitalize()], ["no" if yes else "yes"]


def _build_vqav2(root: Path, seed: int, scale: int, image_size: int) -> dict:
    b = _Bench(root, "vqav2")
    anns = []
    for i in range(TINY_IMAGES["vqav2"] * scale):
        rng, scene = _start(seed, "vqav2", i, image_size)
        image = b.image(f"{i:05d}.png", scene)
        seen = set()
        for j, cat in enumerate(rng.sample(["colour", "shape", "count", "yes/no"], VQA_PER_IMAGE)):
            for _ in range(20):  # a different question from the image's others
                question, answer, atype, variants, wrong = _vqa_question(cat, scene, rng)
                if question not in seen:
                    break
            seen.add(question)
            qid = i * 10 + j
            b.rows.append({"question_id": qid, "image": image, "text": question,
                           "category": "default"})
            anns.append({"question_id": qid, "image_id": i, "question": question,
                         "question_type": cat, "answer_type": atype,
                         "multiple_choice_answer": answer,
                         "answers": _human_answers(rng, answer, variants, wrong)})
    _dump_json(b.dir / "annotations.json", {"annotations": anns})
    return b.finish(annotations="annotations.json")


# ---- GQA -------------------------------------------------------------------------------

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


def _build_gqa(root: Path, seed: int, scale: int, image_size: int) -> dict:
    b = _Bench(root, "gqa")
    anns = {}
    for i in range(TINY_IMAGES["gqa"] * scale):
        rng, scene = _start(seed, "gqa", i, image_size)
        image = b.image(f"{i:05d}.png", scene)
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
            b.rows.append({"question_id": qid, "image": image, "text": q["question"],
                           "category": "default"})
            anns[qid] = {"question": q["question"], "answer": q["answer"],
                         "fullAnswer": q["fullAnswer"], "imageId": f"{i:05d}",
                         "isBalanced": True, "types": q["types"]}
    _dump_json(b.dir / "annotations.json", anns)
    return b.finish(annotations="annotations.json")


# ---- TextVQA ---------------------------------------------------------------------------

def _build_textvqa(root: Path, seed: int, scale: int, image_size: int) -> dict:
    b = _Bench(root, "textvqa")
    anns, data = [], []
    for i in range(TINY_IMAGES["textvqa"] * scale):
        rng, scene = _start(seed, "textvqa", i, image_size)
        image = b.image(f"{i:05d}.png", scene)
        word = scene.word
        pick = rng.random()
        if pick < 0.15:
            question, answer, atype = "How many letters does the word in the image have?", \
                str(len(word)), "number"
            variants, wrong = [number_word(len(word))], [str(len(word) + 1), str(len(word) - 1)]
        else:
            if pick < 0.4:
                obj = rng.choice(scene.objects)  # every object is above the word's band
                question = f"What word is written below {reference(scene, obj)}?"
            else:
                question = rng.choice(["What word is written in the image?",
                                       "What does the text in the image say?",
                                       "What is written at the bottom of the picture?"])
            answer, atype = word, "other"
            variants = [word.upper(), word.capitalize()]
            wrong = [rng.choice([w for w in WORDS if w != word]), word + "s"]
        answers = _human_answers(rng, answer, variants, wrong)
        b.rows.append({"question_id": i, "image": image, "text": question, "ocr_tokens": [word]})
        anns.append({"question_id": i, "image_id": f"{i:05d}", "question": question,
                     "answer_type": atype, "multiple_choice_answer": answer, "answers": answers})
        data.append({"question_id": i, "image_id": f"{i:05d}", "question": question,
                     "answers": [a["answer"] for a in answers]})
    # "annotations": VQAv2 layout; "data": the same answers in TextVQA_0.5.1_val.json's layout.
    _dump_json(b.dir / "annotations.json", {"annotations": anns, "data": data})
    return b.finish(annotations="annotations.json")


# ---- ScienceQA -------------------------------------------------------------------------

SQA_CHOICE = (Q.q_colour, _shape_at, Q.q_size, Q.q_background)
SQA_OPPOSITE_WORDS = sorted(set(Q.OPPOSITES) | set(Q.OPPOSITES.values()))


def _sqa_image_problem(scene: Scene, rng: random.Random, n: int) -> dict:
    pick = rng.random()
    present = sorted({o.kind for o in scene.objects})
    absent = [k for k in KINDS if k not in present]
    if pick < 0.5:
        qa = Q.ask(SQA_CHOICE, scene, rng)
        options, answer = _mc(rng, qa.answer, qa.domain, n)
        return {"question": qa.question, "choices": options, "answer": answer, "hint": "",
                "subject": "natural science", "topic": "shapes and colours",
                "category": f"Identify the {qa.kind.replace('_', ' ')}", "solution": qa.sentence}
    if pick < 0.75 or not absent:
        qa = Q.q_count_kind(scene, rng)
        kind = next(k for k in KINDS if f" {plural(k)} " in f" {qa.question} ")
        question = f"How many {plural(kind)} are in the picture?"
        options, answer = _mc(rng, qa.answer, _near_numbers(int(qa.answer)), n)
        return {"question": question, "choices": options, "answer": answer,
                "hint": "Count every shape, whatever its colour or size.",
                "subject": "natural science", "topic": "counting", "category": "Count shapes",
                "solution": qa.sentence}
    kind = rng.choice(present)
    options, answer = _mc(rng, kind, absent, n)
    return {"question": "Which of these shapes is in the picture?", "choices": options,
            "answer": answer, "hint": "", "subject": "natural science", "topic": "shapes and colours",
            "category": "Identify shapes", "solution": f"The picture has {a_or_an(kind)} {kind}."}


def _sqa_text_problem(rng: random.Random, n: int) -> dict:
    pick = rng.randrange(6)
    if pick == 0:
        (x, y), z = rng.choice(sorted(Q.MIXES.items()))
        x, y = rng.sample([x, y], 2)
        options, answer = _mc(rng, z, [c for c in COLOURS if c not in (x, y)], n)
        return {"question": f"Which colour do you get by mixing {x} and {y} paint?",
                "choices": options, "answer": answer, "hint": "", "subject": "natural science",
                "topic": "colour mixing", "category": "Mix paint colours",
                "solution": f"Mixing {x} and {y} gives {z}."}
    if pick == 1:
        kind = rng.choice([*Q.SIDES, "circle"])
        sides = Q.SIDES.get(kind, 0)
        question = "How many corners does a circle have?" if kind == "circle" else \
            f"How many sides does {a_or_an(kind)} {kind} have?"
        options, answer = _mc(rng, str(sides), [str(k) for k in range(0, 7)], n)
        return {"question": question, "choices": options, "answer": answer, "hint": "",
                "subject": "natural science", "topic": "geometry", "category": "Sides of shapes",
                "solution": f"{a_or_an(kind).capitalize()} {kind} has {number_word(sides)} "
                            f"{'corners' if kind == 'circle' else 'sides'}."}
    if pick == 2:
        kind = rng.choice(KINDS)
        c1, c2 = rng.sample(list(COLOURS), 2)
        a, b = rng.randint(1, 4), rng.randint(1, 4)
        hint = (f"A picture shows {count_phrase(a, f'{c1} {kind}', article=False)} and "
                f"{count_phrase(b, f'{c2} {kind}', article=False)}.")
        options, answer = _mc(rng, str(a + b), _near_numbers(a + b), n)
        return {"question": f"How many {plural(kind)} does the picture show?", "choices": options,
                "answer": answer, "hint": hint, "subject": "natural science", "topic": "counting",
                "category": "Add groups", "solution": f"{a} + {b} = {a + b}."}
    if pick == 3:
        kind = rng.choice(KINDS)
        forms = [plural(kind), kind + "s", kind + "es", kind, kind + "ies"]
        options, answer = _mc(rng, plural(kind), forms, n)
        return {"question": f'What is the plural of "{kind}"?', "choices": options, "answer": answer,
                "hint": "", "subject": "language science", "topic": "grammar",
                "category": "Plural nouns", "solution": f'The plural of "{kind}" is "{plural(kind)}".'}
    if pick == 4:
        w = rng.choice(sorted(Q.OPPOSITES))
        options, answer = _mc(rng, Q.OPPOSITES[w], [x for x in SQA_OPPOSITE_WORDS if x != w], n)
        return {"question": f"What is the opposite of {w}?", "choices": options, "answer": answer,
                "hint": "", "subject": "language science", "topic": "vocabulary",
                "category": "Antonyms", "solution": f"The opposite of {w} is {Q.OPPOSITES[w]}."}
    kind = rng.choice(KINDS)
    sizes = rng.sample(list(SIZES), min(len(SIZES), max(2, n)))
    big = max(sizes, key=SIZES.__getitem__)
    phrases = [f"{a_or_an(s)} {s} {kind}" for s in sizes]
    options, answer = _mc(rng, f"{a_or_an(big)} {big} {kind}", phrases, len(phrases))
    return {"question": "Which is the biggest?", "choices": options, "answer": answer,
            "hint": "The shapes differ only in size.", "subject": "natural science",
            "topic": "sizes", "category": "Compare sizes",
            "solution": f"{a_or_an(big).capitalize()} {big} {kind} is the biggest."}


def sqa_text(problem: dict) -> str:
    """The question as LLaVA's ScienceQA file words it: context, question, lettered options."""
    context = f"Context: {problem['hint']}\n" if problem["hint"] else ""
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(problem["choices"]))
    return f"{context}{problem['question']}\n{options}"


def _build_scienceqa(root: Path, seed: int, scale: int, image_size: int) -> dict:
    b = _Bench(root, "scienceqa")
    problems, with_image = {}, 0
    for i in range(TINY_IMAGES["scienceqa"] * scale):
        rng, scene = _start(seed, "scienceqa", i, image_size)
        pid = str(i)
        n = rng.choice([2, 3, 4])
        p = _sqa_image_problem(scene, rng, n) if scene else _sqa_text_problem(rng, n)
        row = {"question_id": pid}
        if scene:
            row["image"] = b.image(f"{pid}/image.png", scene)
            with_image += 1
        row["text"] = sqa_text(p)
        b.rows.append(row)
        problems[pid] = {"question": p["question"], "choices": p["choices"], "answer": p["answer"],
                         "hint": p["hint"], "image": "image.png" if scene else None,
                         "task": "closed choice", "grade": "grade3", "subject": p["subject"],
                         "topic": p["topic"], "category": p["category"], "skill": p["category"],
                         "lecture": "", "solution": p["solution"], "split": "test"}
    _dump_json(b.dir / "problems.json", problems)
    _dump_json(b.dir / "pid_splits.json", {"test": list(problems)})
    summary = b.finish(problems="problems.json", pid_splits="pid_splits.json")
    return {**summary, "with_image": with_image, "text_only": len(problems) - with_image}


# ---- POPE ------------------------------------------------------------------------------

ALL_PAIRS = [(c, k) for c in COLOURS for k in KINDS]


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


def _build_pope(root: Path, seed: int, scale: int, image_size: int) -> dict:
    b = _Bench(root, "pope")
    n = TINY_IMAGES["pope"] * scale
    starts = [_start(seed, "pope", i, image_size) for i in range(n)]
    freq, cooc = Counter(), Counter()
    for _, scene in starts:
        ps = _pairs(scene)
        freq.update(ps)
        cooc.update((p, q) for p in ps for q in ps if p != q)
    images, positives = [], []
    for i, (rng, scene) in enumerate(starts):
        images.append(b.image(f"{i:05d}.png", scene))
        positives.append(rng.sample(_pairs(scene), POPE_PER_IMAGE))
    labels, qid = {}, 0
    (b.dir / "annotations").mkdir()
    for split in POPE_SPLITS:
        rows = []
        for i, (_, scene) in enumerate(starts):
            rng = _rng(seed, f"pope/{split}", i)
            items = [(p, "yes") for p in positives[i]] + \
                [(p, "no") for p in _pope_negatives(split, scene, rng, freq, cooc)]
            rng.shuffle(items)
            for (colour, kind), label in items:
                qid += 1
                text = pope_question(colour, kind)
                b.rows.append({"question_id": qid, "image": images[i], "text": text,
                               "category": split})
                rows.append({"question_id": qid, "image": images[i], "text": text, "label": label})
        _dump_jsonl(b.dir / "annotations" / f"{split}.json", rows)
        labels[split] = len(rows)
    summary = b.finish(annotations={s: f"annotations/{s}.json" for s in POPE_SPLITS})
    return {**summary, "splits": labels}


# ---- MME -------------------------------------------------------------------------------

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


def _build_mme(root: Path, seed: int, scale: int, image_size: int) -> dict:
    b = _Bench(root, "mme")
    anns, per_cat = [], {}
    for sub in MME_SUBTASKS:
        for i in range(MME_TINY_IMAGES * scale):
            rng, scene = _start(seed, f"mme/{sub}", i, image_size)
            image = b.image(f"{sub}/{i:04d}.png", scene)
            yes_q, no_q = _mme_pair(sub, scene, rng)
            pair = [(yes_q, "Yes"), (no_q, "No")]
            rng.shuffle(pair)
            for j, (q, answer) in enumerate(pair):
                qid = f"{sub}/{i:04d}_{j}"
                text = q + MME_SUFFIX
                b.rows.append({"question_id": qid, "image": image, "text": text, "category": sub})
                anns.append({"question_id": qid, "image": image, "question": text,
                             "answer": answer, "category": sub})
        per_cat[sub] = 2 * MME_TINY_IMAGES * scale
    _dump_json(b.dir / "annotations.json", anns)
    return {**b.finish(annotations="annotations.json"), "categories": per_cat}


# ---- MMMU ------------------------------------------------------------------------------

def _m_most_common(scene: Scene, rng: random.Random):
    c = Counter(o.kind for o in scene.objects).most_common()
    if len(c) > 1 and c[0][1] == c[1][1]:
        return None
    return ("Which shape appears most often in the image?", c[0][0], list(KINDS),
            "Math", "Statistics")


def _m_sides_total(scene: Scene, rng: random.Random):
    kinds = [k for k in ("triangle", "square") if counts(scene, kind=k)]
    if not kinds:
        return None
    total = sum(Q.SIDES[o.kind] for o in scene.objects if o.kind in ("triangle", "square"))
    return ("How many sides do all the triangles and squares in the image have altogether?",
            str(total), _near_numbers(total), "Math", "Geometry")


def _m_mix(scene: Scene, rng: random.Random):
    partners = {}
    for (x, y), z in Q.MIXES.items():
        partners.setdefault(x, []).append((y, z))
        partners.setdefault(y, []).append((x, z))
    objs = [o for o in scene.objects if o.colour in partners]
    if not objs:
        return None
    obj = rng.choice(objs)
    other, result = rng.choice(sorted(partners[obj.colour]))
    ref = reference(scene, obj, avoid="colour")
    return (f"Which colour do you get by mixing paint of the colour of {ref} with {other} paint?",
            result, list(COLOURS), "Art", "Color Theory")


def _m_empty_cell(scene: Scene, rng: random.Random):
    rows = 2 if scene.word else 3  # the word covers the bottom row
    names = [" ".join(p for p in (r, c) if p) or "centre"
             for r in ("top", "", "bottom")[:rows] for c in ("left", "", "right")]
    used = {o.position for o in scene.objects}
    empty = [p for p in names if p not in used]
    taken = [p for p in names if p in used]
    if not empty or len(taken) < 3:
        return None
    return ("Which position in the image has no shape?", rng.choice(empty), taken,
            "Design", "Layout")


def _m_not_colour(scene: Scene, rng: random.Random):
    colour = rng.choice(sorted({o.colour for o in scene.objects}))
    n = len(scene.objects) - counts(scene, colour=colour)
    return (f"How many objects in the image are not {colour}?", str(n), _near_numbers(n),
            "Math", "Arithmetic")


def _m_sides_of(scene: Scene, rng: random.Random):
    objs = [o for o in scene.objects if o.kind in Q.SIDES]
    if not objs:
        return None
    obj = rng.choice(objs)
    return (f"How many sides does {reference(scene, obj)} have?", str(Q.SIDES[obj.kind]),
            [str(k) for k in range(2, 9)], "Math", "Geometry")


MMMU_GENERATORS = (_m_most_common, _m_sides_total, _m_mix, _m_empty_cell, _m_not_colour, _m_sides_of)


def mmmu_text(question: str, options: list[str]) -> str:
    return question + "\n" + "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))


def _build_mmmu(root: Path, seed: int, scale: int, image_size: int) -> dict:
    b = _Bench(root, "mmmu")
    anns = {}
    for i in range(TINY_IMAGES["mmmu"] * scale):
        rng, scene = _start(seed, "mmmu", i, image_size)
        image = b.image(f"{i:05d}.png", scene)
        for gen in rng.sample(MMMU_GENERATORS, len(MMMU_GENERATORS)):
            made = gen(scene, rng)
            if made is not None:
                break
        question, answer, distractors, subject, subfield = made  # _m_not_colour always applies
        options, idx = _mc(rng, answer, distractors, 4)
        assert len(options) == 4
        mid = f"validation_{subject}_{i + 1}"
        b.rows.append({"question_id": mid, "image": image, "text": mmmu_text(question, options),
                       "category": subject})
        anns[mid] = {"question": question, "options": options, "answer": LETTERS[idx],
                     "question_type": "multiple-choice", "subject": subject, "subfield": subfield,
                     "image": image}
    _dump_json(b.dir / "annotations.json", anns)
    return b.finish(annotations="annotations.json")


# ---- all -------------------------------------------------------------------------------

BUILDERS = {"vqav2": _build_vqav2, "gqa": _build_gqa, "textvqa": _build_textvqa,
            "scienceqa": _build_scienceqa, "pope": _build_pope, "mme": _build_mme,
            "mmmu": _build_mmmu}
assert tuple(BUILDERS) == BENCHMARKS


def build_benchmarks(out_dir: str | Path, *, seed: int = 0, size: str = "tiny",
                     image_size: int = 64) -> dict:
    """Write every benchmark under out_dir and out_dir/benchmarks.json (last); return
    that summary. Raises ConfigError for an unknown size or a bad image size."""
    check_args(seed, size, image_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").unlink(missing_ok=True)  # present only once all are whole
    scale = SCALE[size]
    benches = {name: {"dir": name, **BUILDERS[name](out, seed, scale, image_size)}
               for name in BENCHMARKS}
    summary = {"seed": seed, "size": size, "image_size": image_size, "benchmarks": benches}
    tmp = out / f".benchmarks.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "benchmarks.json")
    return summary
