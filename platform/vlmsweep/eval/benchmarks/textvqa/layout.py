"""TextVQA's files as LLaVA-1.5 ships and reads them.

LLaVA's question file puts the *image id* in question_id (one image has several questions),
so eval_textvqa.py finds an answer's annotation by (question_id, the question parsed back out
of the answer's prompt, lowercased) — never by TextVQA's own question_id. `question_of` is its
prompt_processor rule for rule.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..base import SINGLE_WORD, Answer, Item
from ..files import first_dir, foreign, pick, problem, read_json, read_jsonl, require_list

QUESTIONS = "llava_textvqa_val_v051_ocr.jsonl"
ANNOTATIONS = "TextVQA_0.5.1_val.json"
IMAGES = ("train_images",)
OCR_LINE = "Reference OCR token: "


def question_of(prompt: str) -> str | None:
    """The question inside a prompt, lowercased; None where eval_textvqa.py would assert."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):  # the older "OCR tokens: ... Question: ... Short answer:" form
        m = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        return m.group(1).lower() if m else None
    if OCR_LINE in prompt and len(lines) == 3:
        return (lines[1] if prompt.startswith("Reference OCR token:") else lines[0]).lower()
    if len(lines) == 2:
        return lines[0].lower()
    return None


def answer_key(answer: Answer):
    question = question_of(answer.prompt or "")
    if question is None:
        raise problem(answer.where or "answers", "textvqa answers need LLaVA's prompt field (question, "
                      "OCR line, response prompt) to find their question; got "
                      f"{(answer.prompt or '')[:60]!r}")
    return str(answer.question_id), question


def load_items(folder: Path) -> list[Item]:
    path = pick(folder, "textvqa", (QUESTIONS,), "question file")
    images = first_dir(path.parent, IMAGES).relative_to(path.parent)
    items = []
    for r in require_list(read_jsonl(path), path, "textvqa", ("question_id", "image", "text")):
        text = r["text"] if r["text"].rstrip().endswith(SINGLE_WORD) else f"{r['text']}\n{SINGLE_WORD}"
        items.append(Item(r["question_id"], [str(images / r["image"])], text))
    return items


def load_key(path: Path) -> dict:
    """{(image id, question lowercased): the 10 human answers}. As the official dict, a
    repeated (image, question) keeps its last record."""
    path = pick(path, "textvqa", (ANNOTATIONS,), "answer key")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise foreign(path, "textvqa", 'expected TextVQA\'s {"data": [...]}')
    key = {}
    for i, r in enumerate(require_list(data["data"], path, "textvqa", ("image_id", "question", "answers"))):
        if not isinstance(r["answers"], list) or len(r["answers"]) != 10:
            raise problem(path, f"record {i}: expected 10 human answers, got {r['answers']!r:.60}")
        key[(str(r["image_id"]), str(r["question"]).lower())] = [str(a) for a in r["answers"]]
    return key
