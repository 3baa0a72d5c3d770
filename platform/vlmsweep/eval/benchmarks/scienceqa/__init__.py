"""ScienceQA-IMG (test), as LLaVA-1.5's scripts/v1_5/eval/sqa.sh runs it.

Layout (playground/data/eval/scienceqa):
  llava_test_CQM-A.json   LLaVA's question file: [{id, image?, conversations: [human, gpt]}]
  problems.json           ScienceQA's problems (choices, answer index, image, ...)
  pid_splits.json         ScienceQA's splits; "test" is scored
  images/test/<id>/       the images
Generation asks as model_vqa_science.py --single-pred-prompt does, and writes the prompt it
keeps ("<image>\n" first for an image question): eval_science_qa.py reads IMG from it.
"""

from __future__ import annotations

from pathlib import Path

from ..base import OPTION_LETTER, Benchmark, Item
from . import layout


class ScienceQA(Benchmark):
    name = "scienceqa"
    folders = ("scienceqa",)
    metrics = ("accuracy", "img_accuracy")
    prompt = OPTION_LETTER
    layout = f"{layout.QUESTIONS}, problems.json and pid_splits.json"

    def holds_layout(self, folder: Path) -> bool:
        return (folder / layout.QUESTIONS).is_file()

    def answer_prompt(self, item: Item) -> str:
        return f"<image>\n{item.prompt}" if item.images else item.prompt


BENCHMARK = ScienceQA()
