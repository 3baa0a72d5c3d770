"""TextVQA accuracy exactly as LLaVA's eval_textvqa.py computes it.

Each answer line is scored with m4c's TextVQAAccuracyEvaluator (normalize.m4c_accuracy:
EvalAI normalisation of both sides, leave-one-annotator-out over the 10 answers), and the
accuracy is their mean over the answers given: the official script divides by the lines of
the answers file, so a file answering 18 questions is scored on those 18.
"""

from __future__ import annotations

from ...normalize import m4c_accuracy, normalize_answer
from ..base import pair, pct, result, row


def score(bench, answers, key: dict) -> dict:
    paired = pair(bench, answers, key)
    items = []
    for k, a in paired.matched.items():
        truth = key[k]
        majority = max(truth, key=truth.count)  # the first of ties
        items.append({**row(a.question_id, a.text, normalize_answer(a.text), majority, m4c_accuracy(a.text, truth)),
                      "question": k[1], "prompt": a.prompt})
    return result({"accuracy": pct(i["correct"] for i in items)}, items, paired, len(key),
                  missing_rule="not counted, as eval_textvqa.py scores only the answers given")
