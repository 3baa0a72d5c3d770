"""MMMU (validation), as TinyLLaVA Factory reports it, read from MMMU's own release.

Layout (playground/data/eval/MMMU):
  <Subject>/validation-*.parquet   the official validation set (huggingface MMMU/MMMU), every
                                   image of a question (image_1 .. image_7) kept
  or *.json                        the same records as JSON, images as paths beside it
  answer_dict_val.json             MMMU's answer file: accepted as the answer key alone, with
                                   the answers taken as already parsed (main_eval_only.py)
Prompts follow MMMU's configs/llava1.5.yaml; scoring MMMU's eval_utils.py (score.py).
"""

from __future__ import annotations

from pathlib import Path

from ..base import OPTION_LETTER, Benchmark


class MMMU(Benchmark):
    name = "mmmu"
    folders = ("MMMU", "mmmu")
    metrics = ("accuracy",)
    prompt = OPTION_LETTER
    layout = "<Subject>/validation-*.parquet (or the records as JSON)"

    def holds_layout(self, folder: Path) -> bool:
        return any(folder.glob("*/validation-*.parquet")) or any(folder.glob("validation-*.parquet"))


BENCHMARK = MMMU()
