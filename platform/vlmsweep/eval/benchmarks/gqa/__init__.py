"""GQA testdev-balanced, as LLaVA-1.5's scripts/v1_5/eval/gqa.sh runs it.

Layout (playground/data/eval/gqa; TinyLLaVA Factory puts data/'s contents in gqa/ itself):
  llava_gqa_testdev_balanced.jsonl          LLaVA's question file
  data/testdev_balanced_questions.json      GQA's official questions, answers included
  data/images/                              the images
Scoring: convert_gqa_for_eval.py, then GQA's eval.py (see score.py).
"""

from __future__ import annotations

from pathlib import Path

from ..base import SINGLE_WORD, Benchmark
from . import layout


class GQA(Benchmark):
    name = "gqa"
    folders = ("gqa",)
    metrics = ("accuracy", "binary", "open")
    prompt = SINGLE_WORD
    layout = f"{layout.QUESTIONS} and data/{layout.ANNOTATIONS}"

    def holds_layout(self, folder: Path) -> bool:
        return (folder / layout.QUESTIONS).is_file()


BENCHMARK = GQA()
