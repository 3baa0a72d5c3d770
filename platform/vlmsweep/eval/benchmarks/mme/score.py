"""MME scores exactly as MME's eval_tool/calculation.py computes them.

An answer is lowercased, then: exactly "yes" or "no"; else "yes" if "yes" occurs in its first
4 characters, else "no" if "no" does (so "Not" reads as no), else "other" (always wrong).
Per subtask: acc = share of its answers right; acc+ = share of its images whose questions
(two each) are all right — calculation.py takes the answer lines two by two, which is per
image when answers come in question order; score = 100 * acc + 100 * acc+ (at most 200).
perception / cognition = the sums over the subtasks of each group that were answered.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..base import pair, result, row
from .layout import answer_key

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
              "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
EVAL_TOOL = "mme_eval_tool"   # calculation.py --results_dir <out>/mme_eval_tool


def mme_answer(text: str) -> str:
    text = text.lower()
    if text in ("yes", "no"):
        return text
    return "yes" if "yes" in text[:4] else "no" if "no" in text[:4] else "other"


def score(bench, answers, key) -> dict:
    paired = pair(bench, answers, key.truth, keys=lambda a: answer_key(a, key))
    items = []
    right = defaultdict(lambda: defaultdict(dict))  # subtask -> txt -> question -> bool
    for (sub, txt, question), a in paired.matched.items():
        gold, parsed = key.truth[(sub, txt, question)].lower(), mme_answer(a.text)
        right[sub][txt][question] = parsed == gold
        items.append({**row(a.question_id, a.text, parsed, gold, parsed == gold), "subtask": sub, "question": question})
    per_image_questions = defaultdict(int)
    for sub, txt, _ in key.truth:
        per_image_questions[(sub, txt)] += 1
    metrics, subtasks = {}, {}
    for sub, images in right.items():
        marks = [ok for qs in images.values() for ok in qs.values()]
        acc = 100 * sum(marks) / len(marks)
        full = [len(qs) == per_image_questions[(sub, txt)] and all(qs.values()) for txt, qs in images.items()]
        acc_plus = 100 * sum(full) / len(full)
        subtasks[sub], subtasks[f"{sub}/acc"], subtasks[f"{sub}/acc+"] = acc + acc_plus, acc, acc_plus
    notes = []
    for group, names in (("perception", PERCEPTION), ("cognition", COGNITION)):
        present = [s for s in names if s in right]
        if present:
            metrics[group] = sum(subtasks[s] for s in present)
        else:
            notes.append(f"no {group} subtasks answered: {group} not reported")
    unknown = sorted(set(right) - set(PERCEPTION) - set(COGNITION))
    if unknown:
        notes.append(f"subtasks in neither MME group (not summed): {', '.join(unknown)}")
    metrics.update(subtasks)
    return result(metrics, items, paired, len(key.truth), notes, missing_rule="not counted (calculation.py "
                  "reads only the answer lines written); an image missing one is not right for acc+",
                  other=sum(i["parsed"] == "other" for i in items), subtasks=len(right))


def write_eval_tool(answers, key, out_dir: Path) -> list[str]:
    """<subtask>.txt per subtask, "image<TAB>question<TAB>truth<TAB>answer" per line in answer
    order — the files calculation.py reads (tabs and newlines in an answer become spaces)."""
    lines = defaultdict(list)
    for a in answers:
        k = answer_key(a, key)
        if k in key.truth:
            image = key.image[k[:2]].split("/")[-1]
            text = a.text.replace("\t", " ").replace("\n", " ")
            lines[k[0]].append(f"{image}\t{k[2]}\t{key.truth[k]}\t{text}\n")
    folder = Path(out_dir) / EVAL_TOOL
    folder.mkdir(parents=True, exist_ok=True)
    for sub, rows in lines.items():
        (folder / f"{sub}.txt").write_text("".join(rows))
    return [f"{EVAL_TOOL}/{sub}.txt" for sub in lines]
