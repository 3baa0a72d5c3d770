"""Text QA: text-only questions on the world's general facts (paint mixing, sides, counting,
plurals, opposites, sizes), the facts its text-only dialogues teach. It is vlmsweep's own,
for the miniatures: whether an LMM keeps its text ability next to the image benchmarks (what
DeepSpeed-VisualChat's text-only mix is for: experiments/mini/dsvl.yaml). No real release
ships this layout, so only the world builds it.

Layout (textqa/):
  textqa_questions.jsonl   {question_id, text}: the question, no image, no response-format
                           prompt (the dialogues answer in sentences)
  textqa_answers.json      {question_id: {answer, domain, pick, kind}} (score.py)
"""

from __future__ import annotations

from pathlib import Path

from ..base import Benchmark
from . import layout


class TextQA(Benchmark):
    name = "textqa"
    folders = ("textqa",)
    metrics = ("accuracy",)
    prompt = ""
    released = False
    layout = f"{layout.QUESTIONS} and {layout.ANSWERS}"

    def holds_layout(self, folder: Path) -> bool:
        return (folder / layout.QUESTIONS).is_file()


BENCHMARK = TextQA()
