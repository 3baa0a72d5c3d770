"""Text QA's rule: a reply is right when its answer word is the key.

The reply is lower-cased and split into words (number words read as digits: "four" = "4", "no"
= "0" where the answer is a number). Its answer word is the first or the last of those words
that belongs to the question's domain (the key says which), so "Mixing red and blue gives
purple." answers purple, not red, and "A small star is bigger than a large star." answers
small. A reply with no domain word is wrong. Accuracy is the share of right replies; a
question with no reply counts as wrong.
"""

from __future__ import annotations

import re

from vlmsweep.data.world.language import NUMBER_WORDS

from ..base import pair, pct, result, row

_DIGITS = {w: str(n) for n, w in enumerate(NUMBER_WORDS)}


def answer_word(text: str, domain: list[str], pick: str) -> str | None:
    words = re.findall(r"[a-z0-9]+", text.lower())
    if all(d.isdigit() for d in domain):
        words = [_DIGITS.get(w, w) for w in words]
    hits = [w for w in words if w in domain]
    return (hits[0] if pick == "first" else hits[-1]) if hits else None


def score(bench, answers, key: dict) -> dict:
    paired = pair(bench, answers, key)
    items = []
    for qid, record in key.items():
        a = paired.matched.get(qid)
        said = None if a is None else answer_word(a.text, record["domain"], record["pick"])
        items.append({**row(qid, None if a is None else a.text, said, record["answer"], said == record["answer"]),
                      "kind": record.get("kind")})
    return result({"accuracy": pct(i["correct"] for i in items)}, items, paired, len(key))
