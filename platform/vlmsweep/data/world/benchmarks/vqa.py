"""VQAv2 and TextVQA: open answers, each with ten annotator answers in VQAv2's layout."""

from __future__ import annotations

import random
from pathlib import Path

from .. import questions as Q
from ..language import a_or_an, number_word, plural, reference
from ..scenes import BACKGROUNDS, COLOURS, KINDS, WORDS, Scene
from .common import VQA_PER_IMAGE, _Bench, _dump_json, _each_image, _shape_at


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
    for i, rng, scene, image in _each_image(b, seed, scale, image_size):
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


# ---- TextVQA ---------------------------------------------------------------------------

def _build_textvqa(root: Path, seed: int, scale: int, image_size: int) -> dict:
    b = _Bench(root, "textvqa")
    anns, data = [], []
    for i, rng, scene, image in _each_image(b, seed, scale, image_size):
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
