"""MM-Vet, as LLaVA-1.5's scripts/v1_5/eval/mmvet.sh runs it, graded by an LLM judge.

Layout (playground/data/eval/mm-vet, MM-Vet's mm-vet.zip):
  mm-vet.json           {"v1_0": {imagename, capability, question, answer}, ...}
  images/               the images
  llava-mm-vet.jsonl    LLaVA's question file (optional; integer ids, "v1_<id>" in results)
No response prompt: LLaVA asks MM-Vet questions as they are. The judge (judge.py) comes from
eval.judge in the YAML or --judge-url/--judge-model on the command line; without one nothing
is scored. Results are written as the official grader writes them (score.py).
"""

from __future__ import annotations

from pathlib import Path

from ..base import Answer, Benchmark
from . import layout, score


class MMVet(Benchmark):
    name = "mmvet"
    folders = ("mm-vet", "mmvet")
    metrics = ("total",)
    prompt = ""
    needs_judge = True
    in_world = False
    layout = f"{layout.META} and images/"

    def __init__(self, judge=None):
        self.judge = judge  # or pass judge= to score()

    def holds_layout(self, folder: Path) -> bool:
        return (folder / layout.META).is_file()

    def answer_key(self, answer: Answer):
        return layout.answer_key(answer)

    def score(self, answers, key, judge=None) -> dict:
        return score.score(self, answers, key, judge or self.judge)

    def write_outputs(self, answers, key, folder, out_dir: Path, scored=None) -> list[str]:
        return score.write_grader_files(self, answers, scored, key, out_dir)


BENCHMARK = MMVet()
