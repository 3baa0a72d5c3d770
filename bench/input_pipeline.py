"""Input pipeline: samples/s of vlmsweep's shard stream vs a LLaVA-style JSON + image-folder loader.

Same data (the world's instruction split, also exported as LLaVA JSON + PNG files), same
preprocessing per sample (decode, pad-to-square + the vision processor, template +
tokenization with label spans), same machine, one run:

  shards     Ray Data: read_parquet over the shards → map_batches(prepare_table) → iter_batches
             (the stream a Train worker reads through get_dataset_shard)
  llava      a torch Dataset that opens the JSON once, then reads each sample's image files
             from disk and preprocesses it in __getitem__, behind a torch DataLoader with
             the same number of worker processes as there are CPUs, as LLaVA's train.py does

Each side is warmed up first (Ray's worker processes, the DataLoader's forks, imports and
tokenizer/processor loading are one-off costs a real stage amortises), then timed over one
full pass from the first request to the last sample.

    .venv/bin/python bench/input_pipeline.py [--size small] [--samples 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from vlmsweep.config.load import load_variant
from vlmsweep.data.prepare import ensure_splits, world_dir
from vlmsweep.config.workdir import WorkDir
from vlmsweep.data.stream import prep_tools, prepare_row
from vlmsweep.train.stage import prep_spec

ROOT = Path(__file__).resolve().parents[1]


class LlavaJsonDataset(torch.utils.data.Dataset):
    """LLaVA's LazySupervisedDataset in miniature: JSON in memory, images read per item."""

    ROLES = {"human": "user", "gpt": "assistant", "system": "system"}

    def __init__(self, json_path: Path, image_folder: Path, spec):
        self.records = json.loads(json_path.read_text())
        self.image_folder, self.spec = image_folder, spec

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        paths = rec.get("image") or []
        paths = [paths] if isinstance(paths, str) else paths
        images = [(self.image_folder / p).read_bytes() for p in paths]
        row = {"id": rec["id"], "images": images,
               "conversations": [{"role": self.ROLES[t["from"]], "text": t["value"]} for t in rec["conversations"]]}
        return prepare_row(row, self.spec, prep_tools(self.spec))


def timed_pass(iterator, n: int) -> float:
    """samples/s from the first request to the n-th sample."""
    start = time.perf_counter()
    for k, _ in enumerate(iterator, 1):
        if k == n:
            return n / (time.perf_counter() - start)
    raise RuntimeError(f"only {k} samples; ask for fewer (--samples)")


def llava_rate(dataset, n: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=os.cpu_count(),
                                         prefetch_factor=4, persistent_workers=True)
    for _ in zip(range(4 * os.cpu_count()), loader):  # warm: workers forked, imports and tools loaded
        pass
    return timed_pass(iter(loader), n)


def shard_rate(shard_dir: str, spec, n: int) -> float:
    import ray

    import vlmsweep.data.stream as stream
    from vlmsweep.sweep.ray_cluster import ensure_ray

    ensure_ray(num_cpus=os.cpu_count())
    stream.MATERIALIZE_BELOW_BYTES = 0  # measure the streaming path, not a cached copy

    def rows():
        ds = stream.rank_datasets(shard_dir, 1, spec)["train_rank0"]
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=64, prefetch_batches=4):
            yield from range(batch.num_rows)

    for _ in zip(range(64), rows()):  # warm: Ray's worker processes started, imports and tools loaded
        pass
    rate = timed_pass(rows(), n)
    ray.shutdown()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args()
    cfg = load_variant(ROOT / "experiments/smoke/variant.yaml", {"data": {"synthetic": {"size": args.size}}})
    with tempfile.TemporaryDirectory() as tmp:
        work = WorkDir.at(tmp)
        splits = ensure_splits(cfg.data, work)
        spec = prep_spec(cfg, 1, work)
        llava = Path(world_dir(cfg.data, work)) / "llava"
        dataset = LlavaJsonDataset(llava / "instruct.json", llava / "images", spec)
        n = min(args.samples, len(dataset))
        results = {"llava JSON + images": llava_rate(dataset, n),
                   "vlmsweep shards": shard_rate(splits["instruct"], spec, n)}
    print(f"data: world/{args.size} instruct split, {len(dataset)} samples, images {cfg.data.synthetic.image_size} px; "
          f"{os.cpu_count()} CPUs; one full pass of {n} samples each, after a warm-up")
    for name, rate in results.items():
        print(f"{name:<22} {rate:>8.0f} samples/s")
    ratio = results["vlmsweep shards"] / results["llava JSON + images"]
    print(f"shards / llava samples/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
