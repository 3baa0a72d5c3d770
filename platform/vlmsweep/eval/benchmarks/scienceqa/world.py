"""The world's ScienceQA set: multiple choice, with an image or text-only, written as LLaVA's
llava_test_CQM-A.json + ScienceQA's problems.json / pid_splits.json + images/test/<id>/."""

from __future__ import annotations

import random
from pathlib import Path

from vlmsweep.data.world import questions as Q
from vlmsweep.data.world.language import a_or_an, count_phrase, number_word, plural
from vlmsweep.data.world.scenes import COLOURS, KINDS, SIZES, Scene

from ..world_common import LETTERS, TINY_IMAGES, WorldSet, _mc, _near_numbers, _shape_at, dump_json, start
from .layout import IMAGES, QUESTIONS

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
        options, answer = _mc(rng, str(sides), [str(k) for k in range(7)], n)
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


def build(root: Path, seed: int, scale: int, image_size: int) -> dict:
    out = WorldSet(root, "scienceqa")
    records, problems, with_image = [], {}, 0
    for i in range(TINY_IMAGES["scienceqa"] * scale):
        rng, scene = start(seed, "scienceqa", i, image_size)
        pid = str(i)
        n = rng.choice([2, 3, 4])
        p = _sqa_image_problem(scene, rng, n) if scene else _sqa_text_problem(rng, n)
        record = {"id": pid}
        if scene:
            out.image(f"{IMAGES}/{pid}/image.png", scene)
            record["image"] = f"{pid}/image.png"
            with_image += 1
        record["conversations"] = [{"from": "human", "value": ("<image>\n" if scene else "") + sqa_text(p)},
                                   {"from": "gpt", "value": LETTERS[p["answer"]]}]
        records.append(record)
        problems[pid] = {"question": p["question"], "choices": p["choices"], "answer": p["answer"],
                         "hint": p["hint"], "image": "image.png" if scene else None,
                         "task": "closed choice", "grade": "grade3", "subject": p["subject"],
                         "topic": p["topic"], "category": p["category"], "skill": p["category"],
                         "lecture": "", "solution": p["solution"], "split": "test"}
    dump_json(out.dir / QUESTIONS, records)
    dump_json(out.dir / "problems.json", problems)
    dump_json(out.dir / "pid_splits.json", {"test": list(problems)})
    return out.finish(len(problems), {"questions": QUESTIONS, "problems": "problems.json",
                                      "pid_splits": "pid_splits.json", "images": f"{IMAGES}/"},
                      with_image=with_image, text_only=len(problems) - with_image)
