"""TextVQA: VQA accuracy over 10 human answers (m4c TextVQAAccuracyEvaluator, as LLaVA-1.5).

The prompt carries the OCR tokens the way LLaVA-1.5's llava_textvqa_val_v051_ocr.jsonl
does: question, "Reference OCR token: a, b, c", then the single-word prompt.
The answer key can be the real TextVQA_0.5.1_val.json ("data", answers as plain strings)
or a VQAv2-style {"annotations": [{question_id, answers: [{answer}]}]}.
"""

from __future__ import annotations

from pathlib import Path

from ..normalize import normalize_answer
from .base import SINGLE_WORD, AnnotationError, locate, match, pct, question_items, read_json, require_list, result, row
from .vqav2 import vqa_accuracy

OCR_PREFIX = "Reference OCR token: "


def _text(q: dict) -> str:
    tokens = q.get("ocr_tokens") or []
    if not tokens or OCR_PREFIX in q["text"]:
        return q["text"]
    return f"{q['text']}\n{OCR_PREFIX}{', '.join(tokens)}"


def _answers(answers: list) -> list[str]:
    return [a["answer"] if isinstance(a, dict) else a for a in answers]


class TextVQA:
    name = "textvqa"
    metrics = ["accuracy"]

    def load_items(self, bench_dir: Path):
        return question_items(bench_dir, SINGLE_WORD, extra_keys=("ocr_tokens",), text=_text)

    def load_annotations(self, path_or_dir: Path) -> dict:
        """{question_id: [the human answers]}."""
        path = locate(path_or_dir, "annotations.json")
        data = read_json(path)
        rows = data.get("data", data.get("annotations")) if isinstance(data, dict) else None
        if rows is None:
            raise AnnotationError([(str(path), 'not textvqa annotations: expected {"data": [...]} or '
                                               "{\"annotations\": [...]} (another benchmark's file?)")])
        return {r["question_id"]: _answers(r["answers"])
                for r in require_list(rows, path, self.name, ("question_id", "answers"))}

    def score(self, predictions: dict, annotations: dict) -> dict:
        preds, counts = match(predictions, annotations)
        items = []
        for qid, answers in annotations.items():
            pred = preds[str(qid)]
            acc = 0.0 if pred is None else vqa_accuracy(pred, answers)
            majority = max(answers, key=answers.count) if answers else None  # first of ties
            items.append(row(qid, pred, None if pred is None else normalize_answer(pred),
                             majority, acc))
        return result({"accuracy": pct(i["correct"] for i in items)}, items, counts)


BENCHMARK = TextVQA()
