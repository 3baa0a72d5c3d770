"""POPE metrics exactly as LLaVA's llava/eval/eval_pope.py computes them.

Answer rule: keep the text before the first "."; drop commas; split on single spaces; "no"
when a word is exactly "No", "no" or "not" (case-sensitive, as there: "NO" and "Not" read as
yes), else "yes" — so an empty answer or "I cannot tell" is a yes.
Per split, over the answers to that split's questions: accuracy, and precision, recall and
F1 of the "yes" class, as percentages; yes_ratio the fraction of yes answers (0..1, as POPE
prints it). eval_pope.py zips a split's answers with its label lines in order, which is the
pairing by question the answer key holds when answers come in question-file order; a split
with no "yes" answer has precision 0 here (the official division fails). The headline
metrics are the means over the splits present.
"""

from __future__ import annotations

from ..base import pair, result, row
from .layout import SPLITS

METRICS = ("f1", "accuracy", "precision", "recall", "yes_ratio")


def pope_answer(text: str) -> str:
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def split_metrics(pairs: list[tuple[str, str]]) -> dict:
    """(predicted, label) pairs -> POPE's metrics and its confusion counts."""
    tp = sum(p == "yes" and t == "yes" for p, t in pairs)
    fp = sum(p == "yes" and t == "no" for p, t in pairs)
    tn = sum(p == "no" and t == "no" for p, t in pairs)
    fn = sum(p == "no" and t == "yes" for p, t in pairs)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"f1": 100 * _ratio(2 * precision * recall, precision + recall),
            "accuracy": 100 * _ratio(tp + tn, len(pairs)),
            "precision": 100 * precision, "recall": 100 * recall,
            "yes_ratio": _ratio(tp + fp, len(pairs)), "TP": tp, "FP": fp, "TN": tn, "FN": fn}


def score(bench, answers, key: dict) -> dict:
    paired = pair(bench, answers, key)
    items, by_split = [], {}
    for qid, a in paired.matched.items():
        ann = key[qid]
        said = pope_answer(a.text)
        by_split.setdefault(ann["split"], []).append((said, ann["label"]))
        items.append({**row(a.question_id, a.text, said, ann["label"], said == ann["label"]), "split": ann["split"]})
    order = [s for s in SPLITS if s in by_split] + sorted(set(by_split) - set(SPLITS))
    per_split = {s: split_metrics(by_split[s]) for s in order}
    metrics = {m: sum(v[m] for v in per_split.values()) / len(per_split) if per_split else 0.0 for m in METRICS}
    metrics.update({f"{s}/{m}": v[m] for s, v in per_split.items() for m in METRICS})
    counts = {f"{s}/{c}": v[c] for s, v in per_split.items() for c in ("TP", "FP", "TN", "FN")}
    notes = [f"{s}: no yes answer, precision and F1 are 0 (eval_pope.py divides by zero)"
             for s, v in per_split.items() if v["TP"] + v["FP"] == 0]
    return result(metrics, items, paired, len(key), notes,
                  missing_rule="not counted, as eval_pope.py scores only the answers given", **counts)
