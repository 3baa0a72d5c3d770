"""The world's text QA set: questions drawn from the same fact generators as the world's
text-only dialogues (data/world/questions.py TEXT_FACTS), each from its own seeded RNG under
"bench/", with the key and domain the generator gives."""

from __future__ import annotations

from pathlib import Path

from vlmsweep.data.world import questions as Q

from ..world_common import WorldSet, _rng, dump_json, dump_jsonl
from .layout import ANSWERS, QUESTIONS

TINY_QUESTIONS = 50


def build(root: Path, seed: int, scale: int, image_size: int) -> dict:
    del image_size   # text only: no images
    out = WorldSet(root, "textqa")
    questions, key = [], {}
    for i in range(TINY_QUESTIONS * scale):
        rng = _rng(seed, "textqa", i)
        gen = rng.choice(Q.TEXT_FACTS)
        fact = gen(rng)
        questions.append({"question_id": i, "text": fact.question})
        key[str(i)] = {"answer": fact.key, "domain": list(fact.domain), "pick": fact.pick,
                       "kind": gen.__name__.removeprefix("t_")}
    dump_jsonl(out.dir / QUESTIONS, questions)
    dump_json(out.dir / ANSWERS, key)
    return out.finish(len(questions), {"questions": QUESTIONS, "answers": ANSWERS})
