"""ScienceQA (IMG test split as LLaVA-1.5 reports it): option-letter accuracy.

Letter extraction follows LLaVA's llava/eval/eval_science_qa.py: the whole answer is a
letter ("B", here also "(B)", "B.", "B)"), or starts with one ("B. blue", here also
"B) blue", "(B) blue"), or says "The answer is B." / "The answer is (B)."; a newline
counts as ". " as there. Anything else, or a letter beyond the item's choices, is wrong
and counted "unparsed". "accuracy" covers every question, "img_accuracy" those with an
image (LLaVA's IMG-Accuracy).
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from .base import (OPTION_LETTER, AnnotationError, match, pct, question_items, read_json, require_mapping, result,
                   row)

LETTERS = string.ascii_uppercase
_WHOLE = re.compile(r"\(?([A-Z])\)?\.?")
_LEADING = re.compile(r"\(?([A-Z])[.)]\s")
# the lookahead keeps "The answer is Blue" from reading as B
_SAYS = re.compile(r"The answer is \(?([A-Z])\)?(?![A-Za-z])")


def sqa_letter(text: str) -> str | None:
    text = text.strip().replace("\n", ". ")
    m = _WHOLE.fullmatch(text) or _LEADING.match(text) or _SAYS.search(text)
    return m.group(1) if m else None


class ScienceQA:
    name = "scienceqa"
    metrics = ["accuracy", "img_accuracy"]

    def load_items(self, bench_dir: Path):
        return question_items(bench_dir, OPTION_LETTER, extra_keys=())

    def load_annotations(self, path_or_dir: Path) -> dict:
        """{pid: problem} for the test split: problems.json, restricted to pid_splits.json's
        "test" list when that file sits beside it."""
        path = Path(path_or_dir)
        folder, problems_file = (path, path / "problems.json") if path.is_dir() else (path.parent, path)
        problems = require_mapping(read_json(problems_file), problems_file, self.name, ("choices", "answer"))
        splits = folder / "pid_splits.json"
        if splits.is_file():
            test = read_json(splits)
            test = test.get("test") if isinstance(test, dict) else None
            unknown = [pid for pid in test or [] if pid not in problems]
            if not isinstance(test, list) or unknown:
                listed = f"; unknown: {unknown[:3]}" if unknown else ""
                raise AnnotationError([(str(splits),
                                        f'expected a "test" list of ids from {problems_file.name}{listed}')])
            problems = {pid: problems[pid] for pid in test}
        return problems

    def score(self, predictions: dict, annotations: dict) -> dict:
        preds, counts = match(predictions, annotations)
        items, with_image, unparsed = [], [], 0
        for pid, prob in annotations.items():
            pred = preds[str(pid)]
            letter = None if pred is None else sqa_letter(pred)
            if letter is not None and LETTERS.index(letter) >= len(prob["choices"]):
                letter = None
            unparsed += pred is not None and letter is None
            correct = letter is not None and LETTERS.index(letter) == prob["answer"]
            items.append(row(pid, pred, letter, LETTERS[prob["answer"]], correct))
            if prob.get("image"):
                with_image.append(correct)
        counts.update(unparsed=unparsed, with_image=len(with_image))
        notes = [f"{unparsed} answers held no option letter; scored as wrong"] if unparsed else []
        metrics = {"accuracy": pct(i["correct"] for i in items), "img_accuracy": pct(with_image)}
        return result(metrics, items, counts, notes)


BENCHMARK = ScienceQA()
