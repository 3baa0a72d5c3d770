"""Held-out stand-ins for the TinyLLaVA benchmarks, in the file formats LLaVA-1.5's
evaluation reads, so the evaluator runs unchanged on these or on the real files.

`build_benchmarks(out_dir, ...)` writes `out_dir/<bench>/` for each of BENCHMARKS:

  questions.jsonl   LLaVA eval question file, one object per line: question_id, image
                    (relative to images/; absent for text-only ScienceQA items), text (the
                    bare question: the evaluator appends the response-format prompt),
                    plus category / ocr_tokens where that benchmark's file has them.
  images/           the PNGs.
  answer keys       in the benchmark's own format (annotations.json; ScienceQA's
                    problems.json + pid_splits.json; POPE's annotations/<split>.json).

and `out_dir/benchmarks.json` (counts and file names per benchmark), written last.

Every image comes from a scene drawn by its own `random.Random(f"{seed}/bench/<unit>/{i}")`:
training uses other split names ("scene", "instruct"), so benchmark images are new
scenes, and `bench_scene` / `scene_for_image` regenerate the scene behind any item (tests
re-derive every answer from it). Items depend only on (seed, index, image_size), except
POPE's popular/adversarial negatives, which are chosen from statistics over the whole set.

Modules: common (sizes, RNG, scenes, writing), vqa (VQAv2, TextVQA), gqa, scienceqa, pope,
mme, mmmu; this file re-exports their public names and builds them all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..build import check_args
from .common import (ALL_PAIRS, BENCHMARKS, GQA_PER_IMAGE, LETTERS, MME_SUBTASKS, MME_SUFFIX,
                     MME_TINY_IMAGES, POPE_PER_IMAGE, POPE_SPLITS, SCALE, SCENES, SQA_IMAGE_PROB,
                     TINY_IMAGES, VQA_PER_IMAGE, bench_scene, scene_for_image,
                     unambiguous_position)
from .gqa import GQA_OTHER, GQA_RELATIONAL, RELATIONS, _build_gqa
from .mme import _build_mme
from .mmmu import MMMU_GENERATORS, _build_mmmu, mmmu_text
from .pope import _build_pope, pope_question
from .scienceqa import SQA_CHOICE, SQA_OPPOSITE_WORDS, _build_scienceqa, sqa_text
from .vqa import _build_textvqa, _build_vqav2

__all__ = ["ALL_PAIRS", "BENCHMARKS", "BUILDERS", "GQA_OTHER", "GQA_PER_IMAGE", "GQA_RELATIONAL",
           "LETTERS", "MME_SUBTASKS", "MME_SUFFIX", "MME_TINY_IMAGES", "MMMU_GENERATORS",
           "POPE_PER_IMAGE", "POPE_SPLITS", "RELATIONS", "SCALE", "SCENES", "SQA_CHOICE",
           "SQA_IMAGE_PROB", "SQA_OPPOSITE_WORDS", "TINY_IMAGES", "VQA_PER_IMAGE", "bench_scene",
           "build_benchmarks", "mmmu_text", "pope_question", "scene_for_image", "sqa_text",
           "unambiguous_position"]

BUILDERS = {"vqav2": _build_vqav2, "gqa": _build_gqa, "textvqa": _build_textvqa,
            "scienceqa": _build_scienceqa, "pope": _build_pope, "mme": _build_mme,
            "mmmu": _build_mmmu}
assert tuple(BUILDERS) == BENCHMARKS


def build_benchmarks(out_dir: str | Path, *, seed: int = 0, size: str = "tiny",
                     image_size: int = 64) -> dict:
    """Write every benchmark under out_dir and out_dir/benchmarks.json (last); return
    that summary. Raises ConfigError for an unknown size or a bad image size."""
    check_args(seed, size, image_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").unlink(missing_ok=True)  # present only once all are whole
    scale = SCALE[size]
    benches = {name: {"dir": name, **BUILDERS[name](out, seed, scale, image_size)}
               for name in BENCHMARKS}
    summary = {"seed": seed, "size": size, "image_size": image_size, "benchmarks": benches}
    tmp = out / f".benchmarks.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "benchmarks.json")
    return summary
