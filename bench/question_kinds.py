"""Seen or unseen: a trained stage's accuracy per question kind, on its own training items and on
fresh items of the same kinds.

A score at chance has two different causes. A model that answers its training items and not
fresh ones memorised; one that can't answer even the items it trained on (8 epochs of them in
the demo) never got what the question needs from the image: a perception limit that more steps
on the same data won't lift. This tells which, per kind of short-answer question of the world's
instruct mix (data/world/questions.py), scored by exact match after lower-casing.

    .venv/bin/python bench/question_kinds.py --stage WORK/stages/finetune-<id> --work-dir WORK
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from vlmsweep.data.world import build as world
from vlmsweep.eval.benchmarks.base import Item
from vlmsweep.eval.generate import answer, load_checkpoint

SHORT_ANSWER_KINDS = ("vqa", "yes_no", "count", "ocr")  # one question, one word to answer
FRESH_SEED = 7  # another world seed: new scenes, the same generators


def items(seed: int, size: int, image_size: int, first: int, mix: dict | None = None) -> list[tuple[str, str, Item]]:
    """(question kind, answer, item) for the short-answer items among the first `first` of the
    instruct mix of world `seed` of `size` instruct items (and its data.synthetic.mix)."""
    out = []
    for index, kind in enumerate(world.instruct_plan(seed, size, world.normal_mix(mix))[:first]):
        if kind not in SHORT_ANSWER_KINDS:
            continue
        made = world.instruct_item(seed, index, kind, image_size)
        qa, prompt = made.qas[0], made.sample["conversations"][0]["text"]
        # the image marker stands alone on the prompt's first line; answer() adds its own
        question = prompt.split("\n", 1)[1]
        out.append((qa.kind, qa.answer, Item(index, [made.sample["images"][0]], question)))
    return out


def accuracy(model, rows) -> dict[str, tuple[float, int]]:
    texts = answer(model, [r[2] for r in rows], Path("/")).texts
    right = defaultdict(list)
    for i, (kind, expected, _) in enumerate(rows):
        right[kind].append(texts[i].strip().rstrip(".").lower() == expected.lower())
    return {k: (sum(v) / len(v), len(v)) for k, v in sorted(right.items())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", required=True, type=Path, help="a finished instruction stage's directory")
    ap.add_argument("--work-dir", required=True, type=Path, help="the work dir it ran in (its zoo and presets)")
    ap.add_argument("--items", type=int, default=600, help="instruct items to draw from (about half are short-answer)")
    args = ap.parse_args(argv)
    if not (args.stage / "config.yaml").is_file():
        print(f"error: {args.stage}: not a finished stage (no config.yaml)", file=sys.stderr)
        return 2
    model = load_checkpoint(args.stage, args.work_dir / "presets")
    if model.cfg.data.source != "synthetic":
        print(f"error: {args.stage}: trained on shards, not the world: its items can't be regenerated", file=sys.stderr)
        return 2
    synthetic = model.cfg.data.synthetic
    size = world.WORLD_SIZES[synthetic.size][1]
    seen = accuracy(model, items(synthetic.seed, size, synthetic.image_size, args.items, synthetic.mix))
    fresh = accuracy(model, items(FRESH_SEED, size, synthetic.image_size, args.items, synthetic.mix))
    print(f"| question kind | trained on (world seed {synthetic.seed}) | fresh (seed {FRESH_SEED}) |")
    print("|---|---:|---:|")
    for kind in sorted(set(seen) | set(fresh)):
        cells = [f"{seen[kind][0]:.2f} ({seen[kind][1]})" if kind in seen else "",
                 f"{fresh[kind][0]:.2f} ({fresh[kind][1]})" if kind in fresh else ""]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
