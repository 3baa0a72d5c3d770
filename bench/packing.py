"""Packed rows vs LLaVA-style pad-to-longest batches: real tokens/s, same model, same data, one run.

The baseline is LLaVA-1.5's: one sample per row, padded to the longest in the micro-batch,
samples in stream order. The packed side fills rows of `max_length` with whole samples
(positions restart per sample, block-diagonal attention). Both sides train on the same
samples with the same model (the smoke variant's SigLIP → mlp2x_gelu → Llama at its
finetune stage), the same optimizer, and micro-batches with a similar number of positions,
so the memory budget is the same; the only difference is how samples become tensors.

    .venv/bin/python bench/packing.py [--samples 384] [--max-length 1024] [--steps 12]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import islice
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


def prepared_samples(cfg, stage_index: int, work: WorkDir, n: int) -> tuple[list[Sample], tuple]:
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
    return out, spec.image_shape


def train(vlm, groups, batches, pad_id, image_shape, warmup: int = 2) -> dict:
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "name"} for g in groups])
    real = total = 0
    for i, rows in enumerate(batches):
        if i == warmup:
            start, real, total = time.perf_counter(), 0, 0
        batch = collate(rows, pad_id, image_shape=image_shape)
        loss = vlm(batch.input_ids, batch.targets, batch.pixel_values, batch.position_ids, batch.attention_mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        real, total = real + batch.real_tokens, total + batch.total_tokens
    seconds = time.perf_counter() - start
    return {"real_tokens_per_s": real / seconds, "real_fraction": real / total, "seconds": seconds, "real": real}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=384)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--baseline-batches", default="4,8,16",
                    help="samples per pad-to-longest micro-batch (LLaVA-1.5 finetunes with 16 per device)")
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(1)  # a Train worker's share of this 2-core machine

    cfg = load_variant(ROOT / "experiments/smoke/variant.yaml", {"data": {"synthetic": {"size": "small"}}})
    with tempfile.TemporaryDirectory() as tmp:
        work = WorkDir.at(tmp)
        samples, image_shape = prepared_samples(cfg, 1, work, args.samples)
        print(f"model: {cfg.model.vision.family} → {cfg.model.connector.name} → {cfg.model.llm.family} "
              f"(tiny presets), finetune stage, {len(samples)} world SFT samples "
              f"(tokens: mean {np.mean([len(s) for s in samples]):.0f}, min {min(len(s) for s in samples)}, "
              f"max {max(len(s) for s in samples)}); packed rows of {args.max_length}")
        print(f"{'baseline batch':>14} {'padded real':>12} {'packed real':>12} {'padded tok/s':>13} "
              f"{'packed tok/s':>13} {'ratio':>7}")
        packed_rows = list(pack(iter(samples), args.max_length, 16, packing=True))
        for size in (int(x) for x in args.baseline_batches.split(",")):
            rows = [Row([s]) for s in samples]
            baseline = [rows[i:i + size] for i in range(0, len(rows), size)]
            # packed micro-batches holding about as many positions as the baseline's (same memory budget)
            mean_padded = np.mean([size * max(len(r.samples[0]) for r in b) for b in baseline])
            per_micro = max(1, round(mean_padded / args.max_length))
            packed = [packed_rows[i:i + per_micro] for i in range(0, len(packed_rows), per_micro)]
            results = {}
            for name, batches in (("padded", baseline), ("packed", packed)):
                torch.manual_seed(0)
                vlm = build_vlm(cfg.model, work.model_root())
                groups, _ = apply_tuning(vlm, cfg.recipe.stages[1])
                results[name] = train(vlm, groups, list(islice(batches, args.steps + 2)), 1, image_shape)
            p, b = results["packed"], results["padded"]
            print(f"{size:>14} {b['real_fraction']:>12.3f} {p['real_fraction']:>12.3f} {b['real_tokens_per_s']:>13.0f} "
                  f"{p['real_tokens_per_s']:>13.0f} {p['real_tokens_per_s'] / b['real_tokens_per_s']:>6.2f}x")
    print("ratio = packed / pad-to-longest real (non-pad) tokens/s; target ≥ 2x")


if __name__ == "__main__":
    main()
