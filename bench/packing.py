"""Packed rows vs LLaVA-style pad-to-longest batches: real tokens/s, same model, same data, one run.

The baseline is LLaVA-1.5's: one sample per row, padded to the longest in the micro-batch,
samples in stream order. The packed side fills rows of `max_length` with whole samples
(positions restart per sample, block-diagonal attention). Both sides train on the same
samples with the same model (the smoke variant's SigLIP → mlp2x_gelu → Llama at its
finetune stage), the same optimizer, and micro-batches with a similar number of positions,
so the memory budget is the same; the only difference is how samples become tensors.
The two sides' steps alternate, so load from other work on a shared machine falls on both,
and throughput is real tokens per CPU second of this one-thread process (the wall-clock
ratio is printed beside it). LLaVA-1.5 also groups batches by modality
(--group_by_modality_length), keeping text-only samples out of image batches; this
baseline doesn't, which on the LLaVA-like mix leaves it a few more padding positions.

Two mixes, measured side by side: today's `instruct` split (one or two question turns a
sample, narrow lengths) and `instruct_llava_mix` (LLaVA-665K's spread: grouped short-answer
VQA, long conversations, detailed descriptions and text-only dialogues up to ~2K tokens;
data/world/llava_mix.py). Samples are prepared, and rows packed, at `--max-length` (2048,
LLaVA-1.5's and DeepSpeed-VisualChat's length), so the longest samples fit uncut.

    .venv/bin/python bench/packing.py [--samples 768] [--max-length 2048] [--steps 12]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vlmsweep.config.load import load_variant
from vlmsweep.config.workdir import WorkDir
from vlmsweep.data.packing import Row, Sample, collate, pack
from vlmsweep.data.prepare import ensure_splits
from vlmsweep.data.shards import iter_samples
from vlmsweep.data.stream import prep_tools, prepare_row
from vlmsweep.models.tuning import apply_tuning
from vlmsweep.models.vlm import build_vlm
from vlmsweep.train.stage import prep_spec

ROOT = Path(__file__).resolve().parents[1]
MIXES = {"today": "instruct", "llava-like": "instruct_llava_mix"}  # label -> world split


def prepared_samples(cfg, stage_index: int, work: WorkDir, n: int) -> tuple[list[Sample], tuple, int]:
    splits = ensure_splits(cfg.data, work)
    spec = prep_spec(cfg, stage_index, work)
    tools = prep_tools(spec)
    out = []
    for row in iter_samples(splits[cfg.recipe.stages[stage_index].split]):
        p = prepare_row(row, spec, tools)
        if p["skip_reason"]:
            continue
        pixels = np.asarray(p["pixels"], dtype=np.float32).reshape(p["num_images"], *spec.image_shape)
        out.append(Sample(p["id"], np.asarray(p["input_ids"]), np.asarray(p["labels"]), pixels))
        if len(out) == n:
            break
    return out, spec.image_shape, spec.image_tokens


def train_side_by_side(cfg, work: WorkDir, sides: dict[str, list], image_shape, warmup: int = 2) -> dict:
    """Train one fresh model per side, their steps interleaved, so that load from other work on
    the machine falls on both sides alike; the first `warmup` steps of each side are not timed.
    Timed twice: this process's CPU seconds (torch runs on one thread, so on an idle machine that
    is the wall time; on a shared one it leaves out the time other users' work holds the core)
    and wall seconds."""
    models = {}
    for name in sides:
        torch.manual_seed(0)
        vlm = build_vlm(cfg.model, work.model_root())
        groups, _ = apply_tuning(vlm, cfg.recipe.stages[1])
        opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "name"} for g in groups])
        models[name] = (vlm, opt)
    stats = {name: {"cpu": 0.0, "wall": 0.0, "real": 0, "total": 0} for name in sides}
    for i in range(max(map(len, sides.values()))):
        for name, batches in sides.items():
            if i >= len(batches):
                continue
            vlm, opt = models[name]
            cpu, wall = time.process_time(), time.perf_counter()
            batch = collate(batches[i], 1, image_shape=image_shape)
            loss = vlm(batch.input_ids, batch.targets, batch.pixel_values, batch.position_ids, batch.attention_mask)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= warmup:
                st = stats[name]
                st["cpu"] += time.process_time() - cpu
                st["wall"] += time.perf_counter() - wall
                st["real"] += batch.real_tokens
                st["total"] += batch.total_tokens
    return {name: {"tok_s": st["real"] / st["cpu"], "wall_tok_s": st["real"] / st["wall"],
                   "real_fraction": st["real"] / st["total"]} for name, st in stats.items()}


def describe(label: str, samples: list[Sample], image_tokens: int, rows: list[Row], max_length: int) -> None:
    """The mix's spread of text tokens (a sample's positions minus its image tokens) and how it packs."""
    text = np.array([len(s) - image_tokens * len(s.pixel_values) for s in samples])
    p10, p50, p90 = np.percentile(text, [10, 50, 90])
    no_image = sum(len(s.pixel_values) == 0 for s in samples)
    fill = sum(r.length for r in rows) / (len(rows) * max_length)
    print(f"{label:>10}: {len(samples)} samples ({no_image} text-only), text tokens p10 {p10:.0f} / p50 {p50:.0f} / "
          f"p90 {p90:.0f} / max {text.max()} (+{image_tokens} a image); packed {len(samples) / len(rows):.2f} "
          f"samples a row, rows {fill:.1%} full")


def run_mix(cfg, work: WorkDir, samples: list[Sample], image_shape, args) -> list[tuple]:
    packed_rows = list(pack(iter(samples), args.max_length, 16, packing=True))
    lines = []
    for size in (int(x) for x in args.baseline_batches.split(",")):
        rows = [Row([s]) for s in samples]
        baseline = [rows[i:i + size] for i in range(0, len(rows), size)]
        # packed micro-batches holding about as many positions as the baseline's (same memory budget)
        mean_padded = np.mean([size * max(len(r.samples[0]) for r in b) for b in baseline])
        per_micro = max(1, round(mean_padded / args.max_length))
        packed = [packed_rows[i:i + per_micro] for i in range(0, len(packed_rows), per_micro)]
        results = train_side_by_side(cfg, work, {"padded": baseline[:args.steps + 2],
                                                 "packed": packed[:args.steps + 2]}, image_shape)
        lines.append((size, per_micro, results["padded"], results["packed"]))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=768, help="samples prepared per mix")
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--baseline-batches", default="4,8,16",
                    help="samples per pad-to-longest micro-batch (LLaVA-1.5 finetunes with 16 per device)")
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(1)  # a Train worker's share of this 2-core machine

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = WorkDir.at(tmp)
        for label, split in MIXES.items():
            cfg = load_variant(ROOT / "experiments/smoke/variant.yaml", {
                "data": {"synthetic": {"size": "small"}, "splits": {"captions": "captions_short", "instruct": split}},
                "training": {"max_length": args.max_length}})
            samples, image_shape, image_tokens = prepared_samples(cfg, 1, work, args.samples)
            describe(label, samples, image_tokens, list(pack(iter(samples), args.max_length, 16)), args.max_length)
            results[label] = run_mix(cfg, work, samples, image_shape, args)
    print(f"model: {cfg.model.vision.family} → {cfg.model.connector.name} → {cfg.model.llm.family} (tiny presets, "
          f"byte-level tokenizer), finetune stage, {args.steps} timed steps each; samples prepared and packed "
          f"at {args.max_length} tokens")
    print(f"{'mix':>10} {'batch':>5} {'rows':>4} {'padded real':>11} {'packed real':>11} {'padded tok/s':>12} "
          f"{'packed tok/s':>12} {'ratio':>6} {'wall ratio':>10}")
    for label, lines in results.items():
        for size, per_micro, b, p in lines:
            print(f"{label:>10} {size:>5} {per_micro:>4} {b['real_fraction']:>11.3f} {p['real_fraction']:>11.3f} "
                  f"{b['tok_s']:>12.0f} {p['tok_s']:>12.0f} {p['tok_s'] / b['tok_s']:>5.2f}x "
                  f"{p['wall_tok_s'] / b['wall_tok_s']:>9.2f}x")
    print("batch = samples per pad-to-longest micro-batch; rows = packed rows per micro-batch (about the same "
          "positions); real = non-pad share of positions; tok/s = real tokens per CPU second of this one-thread "
          "process; ratio = packed / padded tok/s (wall ratio: the same by wall time); target ≥ 2x")

if __name__ == "__main__":
    main()
