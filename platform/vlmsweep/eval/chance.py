"""Is a score above chance? The model's own answers, shuffled among questions of one type and
scored again by the benchmark's own rule: a permutation test.

`add_chance(bench, answers, key, scored)` adds to a scored result:
  - "chance": {metric: the mean score over SHUFFLES shuffles}: what the model's answer habits
    earn when each answer is given to another question of the same type. A model that says
    "no" to every POPE question, "C" to every multiple choice or "diamond" to every "what
    shape" question scores exactly its chance level;
  - "chance_p": {metric: p}, the share of shuffles (plus the real pairing) that score at least
    as well as the real pairing. A score is above chance when p < ALPHA: its answers depend on
    which question and image they answer, beyond what the question's type alone explains.

Why a permutation and not a fixed chance per benchmark (25% for four options, 50% for yes/no):
open-ended VQA has no such number, and composite metrics don't follow one (POPE's F1 is 66.7
for "always yes", not 50; MME's acc+ needs both of an image's answers right). Shuffling works
for every metric a scorer reports, because it only moves answer texts between questions.

A question's type is the first two words of its question line ("how many", "what colour",
"is there", "which image"), close to VQA's question types (Antol et al., 2015). Within a
type, answers are comparable, so knowing the type ("how many" → a number) is not counted as
looking at the image. A type with one question stays as it is.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from dataclasses import replace

import numpy as np

SHUFFLES = 100
ALPHA = 0.05
SEED = 20_261_129
# A shuffle re-scores every answer: VQAv2's val split (214K questions) takes ~7 s a scoring here,
# so large sets get fewer shuffles, down to the fewest whose smallest p (1/21) is below ALPHA.
MAX_SCORED = 2_000_000
MIN_SHUFFLES = 20

__all__ = ["ALPHA", "SHUFFLES", "add_chance", "above_chance", "question_type", "shuffles_for"]


def question_type(prompt: str | None) -> str:
    """The first two words of the prompt's first text line (image markers skipped), lowercased."""
    for line in (prompt or "").splitlines():
        words = re.findall(r"[a-z0-9']+", re.sub(r"<image[^>]*>", " ", line).lower())
        if words:
            return " ".join(words[:2])
    return ""


def shuffles_for(n_answers: int) -> int:
    """SHUFFLES, or fewer (not under MIN_SHUFFLES) where that many would score over MAX_SCORED answers."""
    return max(MIN_SHUFFLES, min(SHUFFLES, MAX_SCORED // max(n_answers, 1)))


def add_chance(bench, answers: list, key, scored: dict, shuffles: int | None = None) -> dict:
    """`scored` with "chance" and "chance_p" for each numeric metric, and "chance_shuffles" (in
    place; returned). Nothing is added for a result that was not scored, or one whose scoring
    calls a judge (MM-Vet: each shuffle would be a round of paid judge calls)."""
    metrics = scored.get("metrics") or {}
    if scored.get("skipped") or bench.needs_judge or not answers or not metrics:
        return scored
    shuffles = shuffles or shuffles_for(len(answers))
    groups = defaultdict(list)
    for i, a in enumerate(answers):
        groups[question_type(a.prompt)].append(i)
    movable = [np.array(idx) for idx in groups.values() if len(idx) > 1]
    rng = np.random.default_rng(SEED + zlib.crc32(bench.name.encode()))
    names = [m for m, v in metrics.items() if isinstance(v, (int, float))]
    values = {m: [] for m in names}
    texts = [a.text for a in answers]
    for _ in range(shuffles):
        order = np.arange(len(answers))
        for idx in movable:
            order[idx] = rng.permutation(idx)
        shuffled = [replace(a, text=texts[j]) for a, j in zip(answers, order)]
        got = bench.score(shuffled, key)["metrics"]
        for m in names:
            values[m].append(float(got.get(m, float("nan"))))
    scored["chance"] = {m: float(np.nanmean(v)) for m, v in values.items()}
    scored["chance_p"] = {m: (1 + sum(x >= float(metrics[m]) - 1e-9 for x in v)) / (len(v) + 1)
                          for m, v in values.items()}
    scored["chance_shuffles"] = shuffles
    return scored


def above_chance(p: float | None) -> bool | None:
    """Whether a score with permutation p-value p is above chance; None when p is unknown."""
    if p is None or p != p:
        return None
    return bool(p < ALPHA)
