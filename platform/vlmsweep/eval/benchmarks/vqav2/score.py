"""VQAv2 val accuracy as the official evaluation (GT-Vision-Lab/VQA vqaEval.py) scores the
submission LLaVA would upload.

The answer is first normalised as convert_vqav2_for_submission.py does (EvalAI's answer
processor), then vqaEval.py's rule: newlines and tabs to spaces and strip on both sides;
only when the 10 human answers are not all the same are both sides put through its
processPunctuation and processDigitArticle (a digit,digit in an answer deletes every mark);
accuracy = mean over the 10 annotators of min(1, matching other answers / 3). Reported
overall and per answer type, as vqaEval's perAnswerType (it rounds to 2 decimals; these
are unrounded). vqaEval refuses results missing a question; here a missing one scores 0.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ...normalize import digits_articles, normalize_answer, punctuation
from ..base import pair, pct, result, row
from .layout import split_question_ids

SUBMISSION = "vqav2_answers_upload.json"
NO_KEY = ("VQAv2 test-dev has no public answers: nothing scored here; submit "
          f"{SUBMISSION} to the EvalAI server (eval.ai challenge 830)")


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(answer: str, human: list[str]) -> float:
    """0..1, for an answer already normalised for submission."""
    res, gts = _clean(answer), [_clean(h) for h in human]
    if len(set(gts)) > 1:
        gts = [digits_articles(punctuation(g)) for g in gts]
        res = digits_articles(punctuation(res))
    if not gts:
        return 0.0
    hits = sum(g == res for g in gts)
    return sum(min(1.0, (hits - (g == res)) / 3) for g in gts) / len(gts)


def score(bench, answers, key: dict | None) -> dict:
    if key is None:
        return {"metrics": {}, "items": [], "counts": {"answered": len(answers)}, "notes": [NO_KEY],
                "skipped": True}
    paired = pair(bench, answers, key)
    items, by_type = [], defaultdict(list)
    for qid, ann in key.items():
        a = paired.matched.get(qid)
        submitted = None if a is None else normalize_answer(a.text)
        acc = 0.0 if a is None else vqa_accuracy(submitted, [h["answer"] for h in ann["answers"]])
        by_type[ann.get("answer_type", "other")].append(acc)
        items.append({**row(ann["question_id"], None if a is None else a.text, submitted,
                            ann.get("multiple_choice_answer"), acc), "prompt": None if a is None else a.prompt})
    metrics = {"accuracy": pct(i["correct"] for i in items)}
    metrics.update({t: pct(by_type[t]) for t in bench.metrics[1:] if t in by_type})
    return result(metrics, items, paired, len(key), missing_rule="scored 0 (vqaEval.py refuses such results)")


def write_submission(answers, key, folder: Path | None, out_dir: Path) -> str:
    """[{question_id, answer}] over the whole split (LLaVA's test2015 file when shipped, else the
    answer key's or the answers' questions), unanswered ones as "" — convert_vqav2_for_submission."""
    given = {str(a.question_id): a for a in answers}
    ids = split_question_ids(folder)
    if ids is None:
        ids = [ann["question_id"] for ann in key.values()] if key else [a.question_id for a in answers]
    rows = [{"question_id": q, "answer": normalize_answer(given[str(q)].text) if str(q) in given else ""}
            for q in ids]
    out = Path(out_dir) / SUBMISSION
    out.write_text(json.dumps(rows))
    return out.name
