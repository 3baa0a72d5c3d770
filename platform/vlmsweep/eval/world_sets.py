"""The synthetic world's benchmark sets, built through the benchmark registry.

The world (data/world) writes the training splits; the benchmark sets are built here, a layer
above, because each benchmark's builder lives in its folder under eval/benchmarks/. They live
under the world's directory, in a folder named by BENCH_VERSION: a world built before the sets
moved to the official layouts keeps its old `bench/`, never read again.

`build_benchmarks(out_dir, ...)` writes `out_dir/<folder>/` for each world benchmark, in its
official layout (LLaVA's playground/data/eval names: vqav2, gqa, textvqa, scienceqa, pope,
MME, MMMU; and vlmsweep's own textqa), then `out_dir/benchmarks.json` (counts and file names per benchmark), last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vlmsweep import storage
from vlmsweep.data.world.build import check_args

from .benchmarks import BENCHMARKS, WORLD_BENCHMARKS

# Bump when a builder's output changes: the sets then live in a new folder, never reused stale
# (v5: textqa joined).
BENCH_VERSION = 5
BENCH_DIR = f"bench-v{BENCH_VERSION}"


def build_benchmarks(out_dir: str | Path, *, seed: int = 0, size: str = "tiny", image_size: int = 64) -> dict:
    """Write every world benchmark set and out_dir/benchmarks.json (last); return that summary.
    Raises ConfigError for an unknown size or a bad image size."""
    from .benchmarks.world_common import SCALE

    check_args(seed, size, image_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").unlink(missing_ok=True)  # present only once all are whole
    benches = {name: BENCHMARKS[name].build_world(out, seed, SCALE[size], image_size) for name in WORLD_BENCHMARKS}
    summary = {"version": BENCH_VERSION, "seed": seed, "size": size, "image_size": image_size, "benchmarks": benches}
    tmp = out / f".benchmarks.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "benchmarks.json")
    return summary


def world_bench_dir(data, work) -> str:
    """Where the world for `data` keeps its benchmark sets (a path or URI)."""
    from vlmsweep.data.prepare import world_dir

    return storage.join(world_dir(data, work), BENCH_DIR)


def world_bench_identity(data) -> str:
    """The sets' identity for stage ids: the generator's versions, size and seed, not the path."""
    from vlmsweep.data.prepare import world_name

    return f"world:{world_name(data)}/{BENCH_DIR}"


def ensure_world_benchmarks(data, work) -> str:
    """The world's benchmark sets for `data`, built on first use. A remote work dir gets a copy
    built on this node and uploaded, benchmarks.json last: present means complete."""
    from vlmsweep.data.prepare import world_name

    root = world_bench_dir(data, work)
    if not storage.exists(storage.join(root, "benchmarks.json")):
        local = work.local_root / "data" / world_name(data) / BENCH_DIR
        if not (local / "benchmarks.json").is_file():
            s = data.synthetic
            build_benchmarks(local, seed=s.seed, size=s.size, image_size=s.image_size)
        storage.upload_dir(local, root, last="benchmarks.json")
    return root
