"""MM-Vet scores as mm-vet_evaluator.py computes them (one run), and its files.

total = mean grade x 100 over every question of mm-vet.json; per capability (rec, ocr, know,
gen, spat, math) the mean over the questions that need it. The grader stops on a question
with no answer; here that question is graded 0 without asking the judge.
Files, as the grader writes them for a results file named R: R.json ({id: answer}, the
grader's input, what LLaVA's convert_mmvet_for_eval.py writes), R_<judge>-grade-1runs.json
and R_<judge>-cap-score-1runs.csv / -cap-int-score-1runs.csv.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from ..base import pair, result, row

RESULTS = "mmvet_results"
NO_JUDGE = ("MM-Vet needs a judge: set eval.judge (an OpenAI-compatible endpoint: base_url, "
            "model, api_key_env) or pass --judge-url/--judge-model to grade its open answers; not scored")


def score(bench, answers, key: dict, judge) -> dict:
    paired = pair(bench, answers, key)
    if judge is None:
        return {"metrics": {}, "skipped": True, "items": [], "counts": {"answered": len(paired.matched)},
                "notes": [NO_JUDGE]}
    items, by_cap = [], {}
    for qid, ann in key.items():
        a = paired.matched.get(qid)
        grade = 0.0 if a is None else float(judge.grade(ann["question"], ann["answer"], a.text))
        if not 0.0 <= grade <= 1.0:
            raise ValueError(f"MM-Vet judge gave {grade} for {qid!r}; grades are 0..1")
        items.append({**row(qid, None if a is None else a.text, None, ann["answer"], grade),
                      "reply": getattr(judge, "last_reply", None) if a is not None else None})
        for cap in ann.get("capability", []):
            by_cap.setdefault(cap, []).append(grade)
    total = 100 * sum(i["correct"] for i in items) / len(items) if items else 0.0
    metrics = {"total": total, **{c: 100 * sum(g) / len(g) for c, g in sorted(by_cap.items())}}
    who = getattr(judge, "model", type(judge).__name__)
    out = result(metrics, items, paired, len(key), [f"graded by {who}; MM-Vet's published numbers use gpt-4-0613"],
                 missing_rule="graded 0 (the official grader stops there)")
    return {**out, "judge": who}


def _combo(q: dict) -> str:
    # the grader joins a Python set (its order varies run to run); sorted here, so it is stable
    return "_".join(sorted(set(q.get("capability", []))))


def write_grader_files(bench, answers, scored, key, out_dir: Path) -> list[str]:
    out_dir = Path(out_dir)
    (out_dir / f"{RESULTS}.json").write_text(json.dumps({bench.answer_key(a): a.text for a in answers}, indent=2))
    written = [f"{RESULTS}.json"]
    if not scored or scored.get("skipped"):
        return written
    judge = scored["judge"]
    stem = f"{RESULTS}_{judge}"
    grades = {i["question_id"]: {"model": [judge], "content": [i["reply"] or f"{i['correct']}"],
                                 "score": [i["correct"]]} for i in scored["items"]}
    (out_dir / f"{stem}-grade-1runs.json").write_text(json.dumps(grades, indent=4))
    # columns by frequency, as the grader's Counter.most_common; ties in first-seen order (it
    # counts a set, whose order varies run to run)
    caps = Counter(c for q in key.values() for c in dict.fromkeys(q.get("capability", [])))
    sets = Counter(_combo(q) for q in key.values())
    for name, groups in (("cap-score", caps), ("cap-int-score", sets)):
        cols = [c for c, _ in groups.most_common()]
        sums = Counter()
        for i in scored["items"]:
            q = key[i["question_id"]]
            for c in (set(q.get("capability", [])) if name == "cap-score" else [_combo(q)]):
                sums[c] += i["correct"]
        total = round(100 * sum(i["correct"] for i in scored["items"]) / max(len(key), 1), 1)
        with open(out_dir / f"{stem}-{name}-1runs.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["", *cols, "total", "std", "runs"])
            w.writerow([RESULTS, *(round(100 * sums[c] / groups[c], 1) for c in cols), total, 0.0, f"[{total}]"])
        written.append(f"{stem}-{name}-1runs.csv")
    return written[:1] + [f"{stem}-grade-1runs.json"] + written[1:]
