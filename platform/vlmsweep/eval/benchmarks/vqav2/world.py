"""The world's VQAv2 set: three open questions per image with ten annotator answers each,
written in the official val layout (questions JSON, annotations JSON, val2014/ images)."""

from __future__ import annotations

import random
from pathlib import Path

from vlmsweep.data.world import questions as Q
from vlmsweep.data.world.language import a_or_an, number_word, plural, reference
from vlmsweep.data.world.scenes import BACKGROUNDS, COLOURS, KINDS, Scene

from ..world_common import VQA_PER_IMAGE, WorldSet, _shape_at, dump_json, each_image, human_answers
from .layout import VAL_ANNOTATIONS, VAL_IMAGES, VAL_QUESTIONS, val_image


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


def build(root: Path, seed: int, scale: int, image_size: int) -> dict:
    out = WorldSet(root, "vqav2")
    questions, anns = [], []
    for i, rng, scene in each_image("vqav2", seed, scale, image_size):
        out.image(val_image(i), scene)
        seen = set()
        for j, cat in enumerate(rng.sample(["colour", "shape", "count", "yes/no"], VQA_PER_IMAGE)):
            for _ in range(20):  # a different question from the image's others
                question, answer, atype, variants, wrong = _vqa_question(cat, scene, rng)
                if question not in seen:
                    break
            seen.add(question)
            qid = i * 10 + j
            questions.append({"image_id": i, "question": question, "question_id": qid})
            anns.append({"question_type": cat, "multiple_choice_answer": answer,
                         "answers": human_answers(rng, answer, variants, wrong), "image_id": i,
                         "answer_type": atype, "question_id": qid})
    info = {"description": "vlmsweep synthetic world: VQAv2 stand-in", "version": "2.0"}
    dump_json(out.dir / VAL_QUESTIONS, {"info": info, "task_type": "Open-Ended", "data_type": "mscoco",
                                        "license": {}, "data_subtype": "val2014", "questions": questions})
    dump_json(out.dir / VAL_ANNOTATIONS, {"info": info, "license": {}, "data_subtype": "val2014",
                                          "annotations": anns})
    return out.finish(len(questions), {"questions": VAL_QUESTIONS, "annotations": VAL_ANNOTATIONS,
                                       "images": f"{VAL_IMAGES}/"})
