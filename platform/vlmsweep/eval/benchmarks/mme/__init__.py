"""MME, as LLaVA-1.5's scripts/v1_5/eval/mme.sh runs it.

Layout (playground/data/eval/MME):
  MME_Benchmark_release_version/<subtask>/   MME's release: per image a .txt of two lines
                                             "question<TAB>Yes|No", beside the image or in
                                             images/ + questions_answers_YN/
  llava_mme.jsonl                            LLaVA's question file (optional: without it the
                                             questions are read from the release folder)
Answers find their question as convert_answer_to_mme.py finds them: subtask and image from
question_id, the question from the prompt. Scoring: MME's eval_tool/calculation.py
(score.py); the per-subtask .txt files calculation.py reads are written as well.
"""

from __future__ import annotations

from pathlib import Path

from ..base import SINGLE_WORD, Benchmark
from . import layout, score


class MME(Benchmark):
    name = "mme"
    folders = ("MME", "mme")
    metrics = ("perception", "cognition")
    prompt = SINGLE_WORD
    layout = f"{layout.RELEASE}/ (and {layout.QUESTIONS})"

    def holds_layout(self, folder: Path) -> bool:
        return (folder / layout.RELEASE).is_dir() or (folder / layout.QUESTIONS).is_file()

    def write_outputs(self, answers, key, folder, out_dir: Path, scored=None) -> list[str]:
        return score.write_eval_tool(answers, key, out_dir)


BENCHMARK = MME()
