"""GQA's files: LLaVA's question file, GQA's questions JSON (the answer key), the images."""

from __future__ import annotations

from pathlib import Path

from ..base import SINGLE_WORD, Item
from ..files import first_dir, pick, read_json, read_jsonl, require_list, require_mapping

QUESTIONS = "llava_gqa_testdev_balanced.jsonl"
ANNOTATIONS = "testdev_balanced_questions.json"
KEY_PLACES = (f"data/{ANNOTATIONS}", ANNOTATIONS)   # LLaVA's layout, TinyLLaVA Factory's
IMAGES = ("data/images", "images")


def load_items(folder: Path) -> list[Item]:
    path = pick(folder, "gqa", (QUESTIONS,), "question file")
    images = first_dir(path.parent, IMAGES).relative_to(path.parent)
    items = []
    for r in require_list(read_jsonl(path), path, "gqa", ("question_id", "image", "text")):
        text = r["text"] if r["text"].rstrip().endswith(SINGLE_WORD) else f"{r['text']}\n{SINGLE_WORD}"
        items.append(Item(r["question_id"], [str(images / r["image"])], text))
    return items


def load_key(path: Path) -> dict:
    """{question id: GQA's question record}, testdev_balanced_questions.json as GQA ships it."""
    path = pick(path, "gqa", KEY_PLACES, "answer key")
    return require_mapping(read_json(path), path, "gqa", ("answer", "isBalanced", "types"))
