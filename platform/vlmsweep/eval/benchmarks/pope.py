"""POPE: yes/no object-hallucination probes, scored per split as POPE / LLaVA-1.5 do.

Answer rule (llava/eval/eval_pope.py, after POPE's evaluate.py): keep the first sentence
(text before the first "."), drop commas, split into words; "no" if a word is "no" or
"not", else "yes" -- so an empty answer or "I cannot tell" counts as "yes". LLaVA matches
"No" / "no" / "not" case-sensitively; here words are lowercased first, so "Not" and "NO"
count too.

Per split (random / popular / adversarial): accuracy, and precision, recall and F1 of the
"yes" class, as percentages; yes_ratio is the fraction of "yes" answers, 0..1 as POPE
prints it. The headline metrics are the means over the splits present (LLaVA-1.5 reports
the mean F1). A missing prediction counts as the wrong answer (a "no" to a yes-question,
a "yes" to a no-question). A ratio with a zero denominator is 0.
"""

from __future__ import annotations

from pathlib import Path

from .base import SINGLE_WORD, AnnotationError, match, question_items, read_jsonl, require_list, result, row

SPLITS = ("random", "popular", "adversarial")
METRICS = ("f1", "accuracy", "precision", "recall", "yes_ratio")


def pope_answer(text: str) -> str:
    words = text.split(".")[0].replace(",", "").lower().split()
    return "no" if "no" in words or "not" in words else "yes"


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def split_metrics(pairs: list[tuple[str, str]]) -> dict:
    """(predicted, label) pairs -> POPE's metrics."""
    tp = sum(p == "yes" and t == "yes" for p, t in pairs)
    fp = sum(p == "yes" and t == "no" for p, t in pairs)
    fn = sum(p == "no" and t == "yes" for p, t in pairs)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"f1": 100 * _ratio(2 * precision * recall, precision + recall),
            "accuracy": 100 * _ratio(sum(p == t for p, t in pairs), len(pairs)),
            "precision": 100 * precision, "recall": 100 * recall,
            "yes_ratio": _ratio(sum(p == "yes" for p, _ in pairs), len(pairs))}


def _split_name(path: Path) -> str:
    return path.stem.removeprefix("coco_pope_")  # LLaVA names them coco_pope_<split>.json


class POPE:
    name = "pope"
    metrics = list(METRICS)

    def load_items(self, bench_dir: Path):
        return question_items(bench_dir, SINGLE_WORD)

    def load_annotations(self, path_or_dir: Path) -> dict:
        """{question_id: {"label", "split"}} from one split file (JSONL of {question_id,
        label}), a folder of them, or a bench dir with annotations/."""
        path = Path(path_or_dir)
        if path.is_dir() and (path / "annotations").is_dir():
            path = path / "annotations"
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        labels = {}
        for file in files:
            split = _split_name(file)
            for r in require_list(read_jsonl(file), file, self.name, ("question_id", "label")):
                if not isinstance(r["label"], str):
                    raise AnnotationError([(str(file), f"question {r['question_id']!r}: label must be yes or no, "
                                                       f"got {r['label']!r}")])
                if r["question_id"] in labels:
                    # LLaVA pairs answers with labels by order; ids must be unique to match by id
                    raise AnnotationError([(str(file), f"POPE question_id {r['question_id']!r} appears in "
                                                       f"{labels[r['question_id']]['split']} and {split}")])
                labels[r["question_id"]] = {"label": r["label"].strip().lower(), "split": split}
        return labels

    def score(self, predictions: dict, annotations: dict) -> dict:
        preds, counts = match(predictions, annotations)
        items, by_split = [], {}
        for qid, ann in annotations.items():
            pred, label = preds[str(qid)], ann["label"]
            parsed = None if pred is None else pope_answer(pred)
            said = parsed or ("no" if label == "yes" else "yes")  # missing: the wrong answer
            by_split.setdefault(ann["split"], []).append((said, label))
            items.append(row(qid, pred, parsed, label, parsed == label))
        order = [s for s in SPLITS if s in by_split] + sorted(set(by_split) - set(SPLITS))
        per_split = {s: split_metrics(by_split[s]) for s in order}
        metrics = {m: sum(v[m] for v in per_split.values()) / len(per_split) if per_split else 0.0
                   for m in METRICS}
        metrics.update({f"{s}/{m}": v[m] for s, v in per_split.items() for m in METRICS})
        counts.update({f"{s}_questions": len(by_split[s]) for s in order})
        return result(metrics, items, counts)


BENCHMARK = POPE()
