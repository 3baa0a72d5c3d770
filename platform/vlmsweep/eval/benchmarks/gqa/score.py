"""GQA accuracy as LLaVA-1.5 gets it: convert_gqa_for_eval.py, then GQA's eval.py.

The conversion keeps `text.rstrip('.').lower()` (no other cleaning); eval.py counts it right
when it equals the question's "answer", over the balanced questions. "binary" covers the
questions whose structural type is not "query" (verify, logical, choose, compare), "open"
the "query" ones, as eval.py splits them. eval.py refuses a predictions file that misses a
question; here a missing one is wrong. (Consistency, validity, plausibility and grounding
need files GQA's v1.2 release lacks; LLaVA's modified eval.py skips them too.)
"""

from __future__ import annotations

from ..base import pair, pct, result, row


def gqa_prediction(text: str) -> str:
    return text.rstrip(".").lower()


def score(bench, answers, key: dict) -> dict:
    paired = pair(bench, answers, key)
    items, binary, open_ = [], [], []
    for qid, q in key.items():
        if not q["isBalanced"]:
            continue
        a = paired.matched.get(str(qid))
        parsed = None if a is None else gqa_prediction(a.text)
        ok = parsed == q["answer"]
        (open_ if q["types"].get("structural") == "query" else binary).append(ok)
        items.append({**row(qid, None if a is None else a.text, parsed, q["answer"], ok),
                      "structural": q["types"].get("structural")})
    metrics = {"accuracy": pct(i["correct"] for i in items), "binary": pct(binary), "open": pct(open_)}
    return result(metrics, items, paired, len(items), missing_rule="scored as wrong (GQA's eval.py "
                  "refuses a predictions file that misses a question)")
