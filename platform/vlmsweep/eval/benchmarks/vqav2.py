"""VQAv2: open answers scored with the official VQA accuracy.

Accuracy of an answer (github.com/GT-Vision-Lab/VQA, vqaEval.py; EvalAI): over the 10
ways of leaving one of the 10 human answers out, the mean of min(1, #remaining answers
equal to it / 3), answers and prediction both normalised (normalize.normalize_answer).
Reported overall and per answer type ("yes/no", "number", "other"), as the official
evaluation's perAnswerType does.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..normalize import normalize_answer
from .base import SINGLE_WORD, AnnotationError, locate, match, pct, question_items, read_json, require_list, result, row


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """0..1. With k of 10 answers matching: k=1 -> 0.3, 2 -> 0.6, 3 -> 0.9, 4+ -> 1."""
    pred = normalize_answer(prediction)
    gts = [normalize_answer(a) for a in answers]
    if not gts:
        return 0.0
    hits = sum(g == pred for g in gts)
    # leaving out a matching annotator takes one match away; leaving out another keeps all
    return sum(min(1.0, (hits - (g == pred)) / 3) for g in gts) / len(gts)


class VQAv2:
    name = "vqav2"
    metrics = ["accuracy", "yes/no", "number", "other"]

    def load_items(self, bench_dir: Path):
        return question_items(bench_dir, SINGLE_WORD)

    def load_annotations(self, path_or_dir: Path) -> dict:
        """{question_id: annotation} from a VQAv2 annotation file ({"annotations": [...]})."""
        path = locate(path_or_dir, "annotations.json")
        data = read_json(path)
        if not isinstance(data, dict) or "annotations" not in data:
            raise AnnotationError([(str(path), 'not vqav2 annotations: expected {"annotations": [...]} '
                                               "(another benchmark's file?)")])
        return {a["question_id"]: a for a in require_list(data["annotations"], path, self.name,
                                                          ("question_id", "answers"))}

    def score(self, predictions: dict, annotations: dict) -> dict:
        preds, counts = match(predictions, annotations)
        items, by_type = [], defaultdict(list)
        for qid, ann in annotations.items():
            pred = preds[str(qid)]
            acc = 0.0 if pred is None else vqa_accuracy(pred, [a["answer"] for a in ann["answers"]])
            by_type[ann.get("answer_type", "other")].append(acc)
            items.append(row(qid, pred, None if pred is None else normalize_answer(pred),
                             ann.get("multiple_choice_answer"), acc))
        metrics = {"accuracy": pct(i["correct"] for i in items)}
        metrics.update({t: pct(by_type[t]) for t in self.metrics[1:] if t in by_type})
        return result(metrics, items, counts)


BENCHMARK = VQAv2()
