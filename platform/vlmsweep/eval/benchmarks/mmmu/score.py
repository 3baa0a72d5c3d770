"""MMMU accuracy as MMMU's eval (mmmu/utils/eval_utils.py, main_eval_only.py) computes it.

Multiple choice (parse_multi_choice_response): strip ,.!?;:' from the ends and pad with
spaces; candidates are the letters written "(A)"; failing that " A "; failing that, when
the answer has more than 5 words, the options whose text it contains. Several: the one
written last (ties: the first candidate). None: MMMU picks a random letter; here the pick
is seeded by the question id, so reruns agree, counted ("fallback") and noted.
Open questions (parse_open_response, eval_open): key sub-responses after "is", "so", "=",
..., numbers pulled out and rounded to 2 places, strings lowercased; right when a gold
number equals one, or a gold string occurs inside one.
Accuracy is over the answers given (main_eval_only.py iterates the outputs); with MMMU's
answer_dict_val.json as the key the answers are taken as already parsed, as there.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict

from ..base import pair, pct, result, row
from .layout import LETTERS, subject_of


def parse_choice(response: str, options: list[str]) -> str | None:
    letters = LETTERS[:len(options)]
    for ch in ",.!?;:'":
        response = response.strip(ch)
    response = f" {response} "
    found = [c for c in letters if f"({c})" in response]
    at = lambda c: response.rfind(f"({c})")
    if not found:
        found = [c for c in letters if f" {c} " in response]
        at = lambda c: response.rfind(f" {c} ")
    if not found and len(response.split()) > 5:
        low = response.lower()
        found = [c for c, o in zip(letters, options) if o.lower() in low]
        at = lambda c: low.rfind(options[letters.index(c)].lower())
    if not found:
        return None
    return max(found, key=lambda c: (at(c), -found.index(c)))  # argmax: the first of equal positions


def fallback_choice(question_id, options: list[str]) -> str:
    return random.Random(f"mmmu/{question_id}").choice(LETTERS[:len(options)])


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
        return True
    except ValueError:
        return False


def normalize(s: str) -> list:
    s = s.strip()
    if _is_number(s):
        return [round(float(s.replace(",", "")), 2)]
    s = s.lower()
    return [" " + s, s + " "] if len(s) == 1 else [s]


def numbers_in(s: str) -> list[str]:
    return (re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", s) + re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", s)
            + re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])", s))


def parse_open(response: str) -> list:
    response = response.strip().strip(".").lower()
    parts = re.split(r"\.\s(?=[A-Z])|\n", response)
    keys = []
    for i, part in enumerate(parts):
        indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
        if i == len(parts) - 1:
            indicators.append("=")  # the last part may be just an equation
        tails = [part.split(ind)[-1].strip() for ind in indicators if ind in part]
        shortest = min(tails, key=len) if tails else None  # the first of equal lengths
        if shortest and shortest.strip() not in (":", ",", ".", "!", "?", ";", "'"):
            keys.append(shortest)
    keys = keys or [response]
    preds = keys + [n for k in keys for n in numbers_in(k)]
    return list({x for p in preds for x in normalize(p)})


def open_correct(gold, preds: list) -> bool:
    golds = [x for g in (gold if isinstance(gold, list) else [gold]) for x in normalize(str(g))]
    for p in preds:
        if isinstance(p, str):
            if any(isinstance(g, str) and g in p for g in golds):
                return True
        elif p in golds:
            return True
    return False


def score(bench, answers, key: dict) -> dict:
    paired = pair(bench, answers, key)
    items, fallbacks, by_subject = [], 0, defaultdict(list)
    for qid, a in paired.matched.items():
        ann = key[qid]
        gold, fell_back = ann["answer"], False
        if ann["question_type"] != "multiple-choice":
            parsed = parse_open(a.text)
            ok = open_correct(gold, parsed)
        else:
            if ann["options"] is None:  # answer_dict_val.json: outputs already parsed
                parsed = a.text
            else:
                parsed = parse_choice(a.text, ann["options"])
                if parsed is None:
                    parsed, fell_back = fallback_choice(qid, ann["options"]), True
            ok = parsed in gold if isinstance(gold, list) else parsed == gold
        fallbacks += fell_back
        by_subject[subject_of(qid)].append(ok)
        items.append({**row(a.question_id, a.text, parsed, gold, ok), "fallback": fell_back})
    notes = [f"fallback: {fallbacks} answers named no option; scored a random option seeded by the question "
             "id, as MMMU's eval picks one at random"] if fallbacks else []
    metrics = {"accuracy": pct(i["correct"] for i in items)}
    metrics.update({f"subject/{s}": pct(v) for s, v in sorted(by_subject.items())})
    return result(metrics, items, paired, len(key), notes, missing_rule="not counted, as main_eval_only.py "
                  "scores only the answers given", fallback=fallbacks)
