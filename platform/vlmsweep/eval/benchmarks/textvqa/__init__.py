"""TextVQA (val, v0.5.1), as LLaVA-1.5's scripts/v1_5/eval/textvqa.sh runs it.

Layout (playground/data/eval/textvqa):
  llava_textvqa_val_v051_ocr.jsonl   LLaVA's question file: question_id (the image id), image,
                                     text = question + "Reference OCR token: ..." + the prompt
  TextVQA_0.5.1_val.json             TextVQA's answer key ("data": 10 human answers each)
  train_images/                      the images
Scoring: llava/eval/eval_textvqa.py + m4c_evaluator.py (see score.py).
"""

from __future__ import annotations

from pathlib import Path

from ..base import SINGLE_WORD, Answer, Benchmark
from . import layout


class TextVQA(Benchmark):
    name = "textvqa"
    folders = ("textvqa",)
    metrics = ("accuracy",)
    prompt = SINGLE_WORD
    layout = f"{layout.QUESTIONS} and {layout.ANNOTATIONS}"

    def holds_layout(self, folder: Path) -> bool:
        return (folder / layout.QUESTIONS).is_file()

    def answer_key(self, answer: Answer):
        return layout.answer_key(answer)


BENCHMARK = TextVQA()
