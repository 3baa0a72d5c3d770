"""VQAv2: test-dev for EvalAI, as LLaVA-1.5's scripts/v1_5/eval/vqav2.sh runs it; val scored here.

Layouts (playground/data/eval/vqav2):
  test-dev  llava_vqav2_mscoco_test-dev2015.jsonl (+ llava_vqav2_mscoco_test2015.jsonl, the
            whole test split the submission must cover) and test2015/: no answers are public,
            so nothing is scored; the EvalAI submission JSON is written instead.
  val       the official v2_OpenEnded_mscoco_val2014_questions.json,
            v2_mscoco_val2014_annotations.json and val2014/COCO_val2014_<id:012d>.jpg:
            scored here with the official VQA accuracy (score.py). Used when both are there.
Either way vqav2_answers_upload.json is written: [{question_id, answer}], the answers
normalised as LLaVA's convert_vqav2_for_submission.py does (EvalAI's answer processor).
"""

from __future__ import annotations

from pathlib import Path

from ..base import SINGLE_WORD, Benchmark
from . import layout, score


class VQAv2(Benchmark):
    name = "vqav2"
    folders = ("vqav2",)
    metrics = ("accuracy", "yes/no", "number", "other")
    prompt = SINGLE_WORD
    layout = f"{layout.TEST_DEV} or {layout.VAL_QUESTIONS} + {layout.VAL_ANNOTATIONS}"

    def holds_layout(self, folder: Path) -> bool:
        return any((folder / f).is_file() for f in (layout.TEST_DEV, layout.VAL_QUESTIONS))

    def load_key(self, path: Path, questions: Path | None = None):
        path = Path(path)
        # a test-dev folder ships no answers: nothing to score, the submission is the result
        if path.is_dir() and not (path / layout.VAL_ANNOTATIONS).is_file() and (path / layout.TEST_DEV).is_file():
            return None
        return layout.load_key(path)

    def write_outputs(self, answers, key, folder, out_dir: Path, scored=None) -> list[str]:
        return [score.write_submission(answers, key, folder, out_dir)]


BENCHMARK = VQAv2()
