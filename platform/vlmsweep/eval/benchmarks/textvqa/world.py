"""The world's TextVQA set: a word under the shapes, asked about as TextVQA asks, written in
LLaVA's question file + TextVQA_0.5.1_val.json + train_images/."""

from __future__ import annotations

from pathlib import Path

from vlmsweep.data.world.language import number_word, reference
from vlmsweep.data.world.scenes import WORDS

from ..base import SINGLE_WORD
from ..world_common import WorldSet, dump_json, dump_jsonl, each_image, human_answers
from .layout import ANNOTATIONS, IMAGES, OCR_LINE, QUESTIONS


def build(root: Path, seed: int, scale: int, image_size: int) -> dict:
    out = WorldSet(root, "textvqa")
    rows, data = [], []
    for i, rng, scene in each_image("textvqa", seed, scale, image_size):
        word, image_id = scene.word, f"{i:05d}"
        out.image(f"{IMAGES[0]}/{image_id}.png", scene)
        pick = rng.random()
        if pick < 0.15:
            question, answer = "How many letters does the word in the image have?", str(len(word))
            variants, wrong = [number_word(len(word))], [str(len(word) + 1), str(len(word) - 1)]
        else:
            if pick < 0.4:
                obj = rng.choice(scene.objects)  # every object is above the word's band
                question = f"What word is written below {reference(scene, obj)}?"
            else:
                question = rng.choice(["What word is written in the image?",
                                       "What does the text in the image say?",
                                       "What is written at the bottom of the picture?"])
            answer = word
            variants = [word.upper(), word.capitalize()]
            wrong = [rng.choice([w for w in WORDS if w != word]), word + "s"]
        answers = [a["answer"] for a in human_answers(rng, answer, variants, wrong)]
        # LLaVA's question file: the image id as question_id, the OCR tokens in the text
        rows.append({"question_id": image_id, "image": f"{image_id}.png",
                     "text": f"{question}\n{OCR_LINE}{word}\n{SINGLE_WORD}"})
        data.append({"question": question, "image_id": image_id, "image_classes": [],
                     "image_width": image_size, "image_height": image_size, "answers": answers,
                     "question_tokens": question.rstrip("?").split(), "question_id": i, "set_name": "val"})
    dump_jsonl(out.dir / QUESTIONS, rows)
    dump_json(out.dir / ANNOTATIONS, {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1",
                                      "data": data})
    return out.finish(len(rows), {"questions": QUESTIONS, "annotations": ANNOTATIONS, "images": f"{IMAGES[0]}/"})
