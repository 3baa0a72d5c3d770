"""How many steps does a model stack need to learn one question kind from its images?

It takes a finished stage (the demo's pretrain output, say), trains its connector and LLM on
one short-answer question kind of the world (data/world/questions.py) with scenes drawn fresh
every step, so no item repeats and what it learns is the skill, not the items, and prints
accuracy on held-out items (300 by default) every `--every` steps next to the majority answer's.

Two controls tell a perception limit from a learning one:
- `--text-rule`: the same questions, but the answer is a rule on the question's words alone
  (yes for a warm colour word): a model that learns this reads its questions;
- `--pixels`: the vision tower replaced by each 8×8 patch's raw pixels (its input), with a
  fresh two-layer MLP connector: everything the image has reaches the LLM.
- `--describe`: no image; the scene's caption as text before the question instead: can the
  LLM answer at all when the scene is in words it was pretrained on?
`--max-objects 1` draws scenes of 1 object up to that many, so "Is there a red star?" only
asks whether the one object is red and a star.

Accuracy is exact match of every answer token, teacher-forced (what greedy decoding gives
on one-word answers). The lr follows the training schedule (warmup 3%, then cosine).

    .venv/bin/python bench/learn_one_kind.py --stage W/stages/pretrain-<id> --work-dir W --kind exists
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from vlmsweep.config.schema import TrainingConfig
from vlmsweep.data.packing import Row, Sample, collate
from vlmsweep.data.tokenize import tokenize_conversation
from vlmsweep.data.world import questions as Q
from vlmsweep.data.world.language import short_caption
from vlmsweep.data.world.scenes import render_png, sample_scene
from vlmsweep.eval.generate import load_checkpoint
from vlmsweep.models.vlm import IGNORE_INDEX
from vlmsweep.train.engine import lr_factor

KINDS = {"exists": Q.q_exists, "colour": Q.q_colour, "shape_at": Q.q_shape_at, "size": Q.q_size,
         "where": Q.q_where, "background": Q.q_background, "count_colour": Q.q_count_colour,
         "count_kind": Q.q_count_kind}
WARM = {"red", "orange", "yellow", "purple"}   # --text-rule: "yes" for these colour words
PATCH = 8


class RawPatches(torch.nn.Module):
    """The vision tower's input as its output: each PATCH×PATCH patch's pixels, flattened."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.unfold(pixel_values, PATCH, stride=PATCH).transpose(1, 2)


class RawPatchConnector(torch.nn.Sequential):
    def __init__(self, side: int, llm_dim: int):
        super().__init__(torch.nn.Linear(3 * PATCH * PATCH, llm_dim), torch.nn.GELU(), torch.nn.Linear(llm_dim, llm_dim))
        self.num_output_tokens = (side // PATCH) ** 2


def text_rule(qa: Q.QA) -> Q.QA:
    colour = next((w for w in qa.question.lower().rstrip("?").split() if w in Q.COLOURS), None)
    return dataclasses.replace(qa, answer="Yes" if colour in WARM else "No")


class Items:
    """Fresh world scenes, asked one kind of question, tokenized as training tokenizes them."""

    def __init__(self, model, kind: str, max_objects: int | None, rule: bool, describe: bool):
        self.model, self.ask, self.max_objects, self.rule = model, KINDS[kind], max_objects, rule
        self.describe = describe
        self.image_size = model.cfg.data.synthetic.image_size   # the world's, as the stage trained on it

    def one(self, rng: random.Random) -> tuple[Sample, str]:
        while True:
            n = rng.randint(1, self.max_objects) if self.max_objects else None
            scene = sample_scene(rng, self.image_size, n_objects=n)
            qa = self.ask(scene, rng)
            if qa is not None:
                break
        if self.rule:
            qa = text_rule(qa)
        m = self.model
        shown = short_caption(scene) if self.describe else "<image>"
        conversation = [{"role": "user", "text": f"{shown}\n{Q.short_answer_prompt(qa)}"},
                        {"role": "assistant", "text": qa.answer}]
        images = [] if self.describe else [Image.open(io.BytesIO(render_png(scene))).convert("RGB")]
        tok = tokenize_conversation(m.tokenizer, m.template, conversation, len(images), m.vlm.image_tokens, 512)
        pixels = m.images(images) if images else np.zeros((0, 3, 1, 1), dtype=np.float32)
        return Sample(qa.question, tok.input_ids, tok.labels, pixels), qa.answer

    def batch(self, rng: random.Random, n: int):
        made = [self.one(rng) for _ in range(n)]
        pad = self.model.tokenizer.pad_token_id or 0
        return collate([Row([s]) for s, _ in made], pad), [a for _, a in made]


@torch.no_grad()
def accuracy(vlm, batches) -> float:
    vlm.eval()
    right = total = 0
    for b, _ in batches:
        hidden = vlm.llm.get_decoder()(inputs_embeds=vlm.embed(b.input_ids, b.pixel_values),
                                       attention_mask=b.attention_mask, use_cache=False).last_hidden_state
        for i in range(b.input_ids.shape[0]):
            at = (b.targets[i] != IGNORE_INDEX).nonzero()[:, 0]
            guess = vlm.llm.get_output_embeddings()(hidden[i, at]).argmax(-1)
            right += bool((guess == b.targets[i, at]).all())
            total += 1
    vlm.train()
    return right / total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", required=True, type=Path, help="a finished stage's directory (its model is the start)")
    ap.add_argument("--work-dir", required=True, type=Path, help="the work dir it ran in (its presets)")
    ap.add_argument("--kind", default="exists", choices=sorted(KINDS))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=100, help="score the held-out items every this many steps")
    ap.add_argument("--batch", type=int, default=24, help="items a step (the demo's finetune averages 24)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--held-out", type=int, default=300, help="held-out items scored (in batches of 50)")
    ap.add_argument("--max-objects", type=int, default=None, help="scenes of 1 to this many objects")
    ap.add_argument("--pixels", action="store_true", help="raw patch pixels instead of the vision tower")
    ap.add_argument("--describe", action="store_true", help="the scene's caption as text instead of its image")
    ap.add_argument("--text-rule", action="store_true",
                    help="answers from the question's words alone: yes for a warm colour word (exists, count_colour)")
    args = ap.parse_args(argv)
    if args.text_rule and args.kind not in ("exists", "count_colour"):
        print(f"error: --text-rule: {args.kind} questions name no colour to make a rule on (use exists or count_colour)",
              file=sys.stderr)
        return 2
    if args.describe and args.pixels:
        print("error: --describe and --pixels: the first shows no image, the second changes how it is seen", file=sys.stderr)
        return 2
    if not (args.stage / "config.yaml").is_file():
        print(f"error: {args.stage}: not a finished stage (no config.yaml)", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    model = load_checkpoint(args.stage, args.work_dir / "presets")
    vlm = model.vlm
    if args.pixels:
        side = model.images([Image.new("RGB", (64, 64))]).shape[-1]   # the processor's square side
        vlm.vision = RawPatches()
        vlm.connector = RawPatchConnector(side, vlm.llm.config.hidden_size)
    for p in vlm.vision.parameters():
        p.requires_grad = False
    vlm.train()
    params = [p for p in vlm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    schedule = TrainingConfig(steps=args.steps)
    items = Items(model, args.kind, args.max_objects, args.text_rule, args.describe)
    held = [items.batch(random.Random(f"learn_one_kind/held/{i}"), min(50, args.held_out - i))
            for i in range(0, args.held_out, 50)]
    answers = Counter(a for _, batch in held for a in batch)
    majority = answers.most_common(1)[0][1] / sum(answers.values())
    shown = "the caption as text" if args.describe else "raw pixels" if args.pixels else "vision tower"
    print(f"{args.kind}{' (text rule)' if args.text_rule else ''}, {shown}, "
          f"{args.batch} items a step, lr {args.lr:g}; held-out majority answer: {majority:.3f}")
    rng, start = random.Random("learn_one_kind/train"), time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.every == 0 or step == args.steps:
            print(f"step {step:5d}  accuracy {accuracy(vlm, held):.3f}  ({time.perf_counter() - start:.0f} s)", flush=True)
        if step == args.steps:
            break
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_factor(step / args.steps, schedule)
        b, _ = items.batch(rng, args.batch)
        loss = vlm(b.input_ids, b.targets, b.pixel_values, b.position_ids, b.attention_mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return 0


if __name__ == "__main__":
    sys.exit(main())
