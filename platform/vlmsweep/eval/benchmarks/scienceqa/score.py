"""ScienceQA accuracy exactly as LLaVA's llava/eval/eval_science_qa.py computes it.

Over every problem of the test split, in pid_splits.json's order:
  - the answer text, or "FAILED" when the problem has no answer;
  - its letter, strictly: the whole text is one of A-E; or it starts "X. " (letter, period,
    space); or the pattern "The answer is ([A-Z])." (any character after the letter) occurs
    exactly once. Anything else ("B.", "(B)", "The answer is B" at the very end) is no letter;
  - right when that letter, among the first len(choices) of A-E, is the answer index.
accuracy = right / all test problems. img_accuracy = the same over the answers whose prompt
holds "<image>": LLaVA decides "image question" from the prompt it wrote, so a problem with
no answer counts as a text question.
"""

from __future__ import annotations

import re

from ..base import pair, pct, result, row
from ..files import problem

OPTIONS = ("A", "B", "C", "D", "E")  # a tuple: membership is whole-string, as the official list
_SAYS = re.compile(r"The answer is ([A-Z]).")


def sqa_letter(text: str) -> str | None:
    if text in OPTIONS:
        return text
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    found = _SAYS.findall(text)
    return found[0] if len(found) == 1 else None


def score(bench, answers, key: dict) -> dict:
    no_prompt = next((a for a in answers if a.prompt is None), None)
    if no_prompt is not None:
        raise problem(no_prompt.where or "answers", "scienceqa answers need LLaVA's prompt field: "
                      "eval_science_qa.py tells image questions by <image> in it")
    paired = pair(bench, answers, key)
    items, with_image, unparsed = [], [], 0
    for pid, prob in key.items():
        a = paired.matched.get(str(pid))
        text, prompt = (a.text, a.prompt) if a is not None else ("FAILED", "Unknown")
        letter = sqa_letter(text)
        unparsed += a is not None and letter is None
        choices = OPTIONS[:len(prob["choices"])]
        correct = letter is not None and letter in choices and choices.index(letter) == prob["answer"]
        image = "<image>" in prompt
        if image:
            with_image.append(correct)
        items.append({**row(pid, None if a is None else a.text, letter, OPTIONS[prob["answer"]], correct),
                      "image": image})
    notes = [f"{unparsed} answers held no option letter by the official rule; scored as wrong"] if unparsed else []
    if not with_image:
        notes.append("no answered question has <image> in its prompt: img_accuracy is 0")
    metrics = {"accuracy": pct(i["correct"] for i in items), "img_accuracy": pct(with_image)}
    return result(metrics, items, paired, len(key), notes, missing_rule="scored as wrong and as a "
                  "text question, as eval_science_qa.py does", unparsed=unparsed, with_image=len(with_image))
