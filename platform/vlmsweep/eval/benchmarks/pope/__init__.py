"""POPE (COCO: random, popular, adversarial), as LLaVA-1.5's scripts/v1_5/eval/pope.sh runs it.

Layout (playground/data/eval/pope):
  llava_pope_test.jsonl         LLaVA's question file; each question's `category` is its split
  coco/coco_pope_<split>.json   POPE's label files (JSON lines: question_id, image, text, label)
  val2014/                      the COCO images
The answer key is both: a label file's k-th line is the k-th question of its split in the
question file, as eval_pope.py pairs them (score.py). A label file that is not named
coco_pope_<split>.json may carry a `category` per line instead.
"""

from __future__ import annotations

from pathlib import Path

from ..base import SINGLE_WORD, Benchmark
from . import layout


class POPE(Benchmark):
    name = "pope"
    folders = ("pope",)
    metrics = ("f1", "accuracy", "precision", "recall", "yes_ratio")
    prompt = SINGLE_WORD
    layout = f"{layout.QUESTIONS} and coco/coco_pope_<split>.json"

    def holds_layout(self, folder: Path) -> bool:
        return (folder / layout.QUESTIONS).is_file()

    def load_key(self, path: Path, questions: Path | None = None):
        return layout.load_key(path, questions)


BENCHMARK = POPE()
