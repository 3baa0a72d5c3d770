"""MME: yes/no pairs per image, scored with MME's official eval_tool/calculation.py.

An answer is lowercased and stripped, then parse_pred_ans: exactly "yes" / "no", else
"yes" if "yes" occurs in its first 4 characters, else "no" if "no" does (so "Not" reads
as no), else "other" (always wrong). Per subtask: acc = share of questions right, acc+ =
share of images whose questions are all right (each image has two), score = 100*acc +
100*acc+ (max 200). Perception / cognition = sums over the subtasks of each group present.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .base import SINGLE_WORD, locate, match, question_items, read_json, require_list, result, row

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
              "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_answer(text: str) -> str:
    text = text.strip().lower()
    if text in ("yes", "no"):
        return text
    return "yes" if "yes" in text[:4] else "no" if "no" in text[:4] else "other"


class MME:
    name = "mme"
    metrics = ["perception", "cognition"]

    def load_items(self, bench_dir: Path):
        # MME's own text already ends "Please answer yes or no."; LLaVA-1.5 adds its prompt too
        return question_items(bench_dir, SINGLE_WORD)

    def load_annotations(self, path_or_dir: Path) -> dict:
        """{question_id: {image, question, answer ("Yes"/"No"), category}}."""
        path = locate(path_or_dir, "annotations.json")
        rows = require_list(read_json(path), path, self.name, ("question_id", "answer", "category", "image"))
        return {a["question_id"]: a for a in rows}

    def score(self, predictions: dict, annotations: dict) -> dict:
        preds, counts = match(predictions, annotations)
        items, right = [], defaultdict(lambda: defaultdict(list))  # subtask -> image -> [bool]
        for qid, ann in annotations.items():
            pred, gold = preds[str(qid)], ann["answer"].strip().lower()
            parsed = None if pred is None else mme_answer(pred)
            right[ann["category"]][ann["image"]].append(parsed == gold)
            items.append(row(qid, pred, parsed, gold, parsed == gold))
        metrics, subtasks = {}, {}
        for sub, images in right.items():
            answers = [ok for oks in images.values() for ok in oks]
            acc = 100 * sum(answers) / len(answers)
            acc_plus = 100 * sum(all(oks) for oks in images.values()) / len(images)
            subtasks[sub] = acc + acc_plus
            subtasks[f"{sub}/acc"], subtasks[f"{sub}/acc+"] = acc, acc_plus
        notes = []
        for group, names in (("perception", PERCEPTION), ("cognition", COGNITION)):
            present = [s for s in names if s in right]
            if present:
                metrics[group] = sum(subtasks[s] for s in present)
            else:
                notes.append(f"no {group} subtasks in the annotations: {group} not reported")
        unknown = sorted(set(right) - set(PERCEPTION) - set(COGNITION))
        if unknown:
            notes.append(f"subtasks in neither MME group (not summed): {', '.join(unknown)}")
        metrics.update(subtasks)
        counts["other"] = sum(i["parsed"] == "other" for i in items)
        counts["subtasks"] = len(right)
        return result(metrics, items, counts, notes)


BENCHMARK = MME()
