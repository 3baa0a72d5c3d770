"""MMMU (validation): multiple-choice accuracy with MMMU's official answer parsing.

parse_choice follows parse_multi_choice_response in MMMU's eval/eval_utils.py: strip
",.!?;:'" from the ends and pad with spaces; candidates are the letters written "(A)";
failing that, " A " (here also " A. "); failing that, when the answer is longer than 5
words, the options whose text it contains. Of several candidates the one occurring last
wins. One change: an option whose text lies inside another matched option's ("red" in
"dark red") is not a candidate of its own. With no candidate the official script picks a
random letter; here the pick is seeded by the question id, so reruns agree, and each one
is counted ("fallback") and reported in the notes.

Open (non multiple-choice) questions, which the world set lacks, are scored by MMMU's
string rule only: right if a gold answer, lowercased, occurs in the lowercased answer.
"""

from __future__ import annotations

import ast
import random
import string
from pathlib import Path

from .base import OPTION_LETTER, locate, match, pct, question_items, read_json, require_mapping, result, row

LETTERS = string.ascii_uppercase


def parse_choice(response: str, options: list[str]) -> str | None:
    """The letter a response picks, or None when nothing in it points at an option."""
    letters = LETTERS[:len(options)]
    text = " " + response.strip().strip(",.!?;:'") + " "
    found = [c for c in letters if f"({c})" in text]
    if found:
        return max(found, key=lambda c: text.rfind(f"({c})"))
    at = {c: max(text.rfind(f" {c} "), text.rfind(f" {c}. ")) for c in letters}
    found = [c for c in letters if at[c] >= 0]
    if found:
        return max(found, key=at.get)
    if len(text.split()) > 5:
        low = text.lower()
        opt = {c: o.strip().lower() for c, o in zip(letters, options)}
        found = [c for c in letters if opt[c] and opt[c] in low]
        found = [c for c in found if not any(opt[c] != opt[d] and opt[c] in opt[d] for d in found)]
        if found:
            return max(found, key=lambda c: low.rfind(opt[c]))
    return None


def fallback_choice(question_id, options: list[str]) -> str:
    return random.Random(f"mmmu/{question_id}").choice(LETTERS[:len(options)])


def _options(ann: dict) -> list[str]:
    opts = ann.get("options") or []
    return ast.literal_eval(opts) if isinstance(opts, str) else list(opts)  # HF stores a str


class MMMU:
    name = "mmmu"
    metrics = ["accuracy"]

    def load_items(self, bench_dir: Path):
        return question_items(bench_dir, OPTION_LETTER)

    def load_annotations(self, path_or_dir: Path) -> dict:
        """{id: {question, options, answer (letter), question_type, subject, subfield}}."""
        path = locate(path_or_dir, "annotations.json")
        return require_mapping(read_json(path), path, self.name, ("answer",))

    def score(self, predictions: dict, annotations: dict) -> dict:
        preds, counts = match(predictions, annotations)
        items, fallbacks, open_questions = [], [], 0
        for qid, ann in annotations.items():
            pred, gold = preds[str(qid)], ann["answer"]
            golds = gold if isinstance(gold, list) else [gold]
            if ann.get("question_type", "multiple-choice") != "multiple-choice":
                open_questions += 1
                ok = pred is not None and any(str(g).strip().lower() in pred.lower() for g in golds)
                items.append(row(qid, pred, pred, gold, ok))
                continue
            options = _options(ann)
            parsed = None if pred is None else parse_choice(pred, options)
            fell_back = pred is not None and parsed is None
            if fell_back:
                parsed = fallback_choice(qid, options)
                fallbacks.append(qid)
            items.append({**row(qid, pred, parsed, gold, parsed in golds), "fallback": fell_back})
        counts.update(fallback=len(fallbacks), open=open_questions)
        notes = []
        if fallbacks:
            notes.append(f"fallback: {len(fallbacks)} answers named no option; scored a random "
                         "option seeded by the question id, as MMMU's eval picks one at random")
        if open_questions:
            notes.append(f"{open_questions} open questions scored by string containment only")
        return result({"accuracy": pct(i["correct"] for i in items)}, items, counts, notes)


BENCHMARK = MMMU()
