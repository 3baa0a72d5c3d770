"""GQA: exact match, GQA's official accuracy on testdev-balanced.

LLaVA-1.5 (llava/eval/convert_gqa_for_eval.py) lowercases the answer and strips its
trailing periods; GQA's eval.py then counts answer == gold. Both sides get the same
treatment here, with surrounding whitespace stripped.
"""

from __future__ import annotations

from pathlib import Path

from .base import SINGLE_WORD, locate, match, pct, question_items, read_json, require_mapping, result, row


def gqa_answer(text: str) -> str:
    return text.strip().rstrip(".").strip().lower()


class GQA:
    name = "gqa"
    metrics = ["accuracy"]

    def load_items(self, bench_dir: Path):
        return question_items(bench_dir, SINGLE_WORD)

    def load_annotations(self, path_or_dir: Path) -> dict:
        """{question_id: {answer, question, fullAnswer, types, ...}}, GQA's questions file."""
        path = locate(path_or_dir, "annotations.json")
        return require_mapping(read_json(path), path, self.name, ("answer",))

    def score(self, predictions: dict, annotations: dict) -> dict:
        preds, counts = match(predictions, annotations)
        items = []
        for qid, ann in annotations.items():
            pred = preds[str(qid)]
            parsed = None if pred is None else gqa_answer(pred)
            items.append(row(qid, pred, parsed, ann["answer"], parsed == gqa_answer(ann["answer"])))
        return result({"accuracy": pct(i["correct"] for i in items)}, items, counts)


BENCHMARK = GQA()
