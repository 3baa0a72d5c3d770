"""Make a variant's data splits exist as shard directories, and name their identity."""

from __future__ import annotations

import hashlib
import json
import os

from vlmsweep import storage
from vlmsweep.config.errors import ConfigError
from vlmsweep.config.schema import DataConfig
from vlmsweep.config.workdir import WorkDir

from .shards import MANIFEST, read_manifest
from .world import build_world, llava_mix
from .world.build import normal_mix


# Bump when the world generator's output changes (new splits it writes, benchmark sets, wording):
# a world built by an older generator then lives in another directory, never reused stale.
# On-demand splits (ON_DEMAND_SPLITS) carry versions of their own instead.
WORLD_VERSION = 3


def world_name(data: DataConfig) -> str:
    """The world's folder name: its generator version, size, seed and image size, and a hash of its
    mix when that isn't the default (the same mix written another way names the same folder)."""
    s = data.synthetic
    name = f"world-v{WORLD_VERSION}-{s.size}-seed{s.seed}-px{s.image_size}"
    mix = normal_mix(s.mix)
    if mix:
        name += "-mix" + hashlib.sha256(json.dumps(mix, sort_keys=True).encode()).hexdigest()[:8]
    return name


def world_dir(data: DataConfig, work: WorkDir) -> str:
    """Where the world for `data` lives in the work dir (a path or URI)."""
    return storage.join(work.data, world_name(data))


def ensure_world(data: DataConfig, work: WorkDir) -> str:
    """The world's location, generating it on first use. A remote work dir gets a copy built on
    this node (under the node's cache) and uploaded, world.json last: present means complete."""
    root = world_dir(data, work)
    if not storage.exists(storage.join(root, "world.json")):
        local = work.local_root / "data" / world_name(data)
        if not (local / "world.json").is_file():
            build_world(local, seed=data.synthetic.seed, size=data.synthetic.size,
                        image_size=data.synthetic.image_size, mix=data.synthetic.mix)
        storage.upload_dir(local, root, last="world.json")
    return root


# Splits built on first request, beside the world's own, rather than by build_world: adding one
# leaves WORLD_VERSION, the bytes of every existing split and so the zoo's cache key (which holds
# WORLD_VERSION) as they were, a world built before the split existed gains it without a rebuild,
# and worlds that never use it never pay for it. Each lives in a folder named by its generator's
# version, as the benchmark sets do, so a changed generator never reuses a stale copy.
# name (as data.splits names it) -> (folder under the world, builder(out_dir, seed, size, image_size))
ON_DEMAND_SPLITS = {
    llava_mix.SPLIT: (f"{llava_mix.SPLIT}-v{llava_mix.VERSION}", llava_mix.build_llava_mix),
}


def ensure_on_demand_split(data: DataConfig, work: WorkDir, name: str) -> str:
    """The shard dir of on-demand split `name` of the world for `data`, built on first use.
    Built under this node's cache and uploaded, manifest last: present means complete."""
    folder, build = ON_DEMAND_SPLITS[name]
    target = storage.join(ensure_world(data, work), folder)
    if not storage.exists(storage.join(target, MANIFEST)):
        local = work.local_root / "data" / world_name(data) / folder
        if not (local / MANIFEST).is_file():
            s = data.synthetic
            build(local, seed=s.seed, size=s.size, image_size=s.image_size)
        storage.upload_dir(local, target, last=MANIFEST)
    return target


def ensure_splits(data: DataConfig, work: WorkDir) -> dict[str, str]:
    """split name -> shard dir (absolute path or URI), generating the synthetic world on first use
    (and an on-demand split the first time a config names it)."""
    if data.source == "synthetic":
        root = ensure_world(data, work)
        dirs = {split: ensure_on_demand_split(data, work, sub) if sub in ON_DEMAND_SPLITS
                else storage.join(root, sub) for split, sub in data.splits.items()}
    else:
        # ${VLMSWEEP_DATA}-style variables let one grid file serve every machine
        dirs = {split: storage.normalize(os.path.expandvars(path)) for split, path in data.splits.items()}
    problems = []
    for split, path in dirs.items():
        try:
            read_manifest(path)
        except (FileNotFoundError, ValueError, OSError) as err:
            problems.append((f"data.splits.{split}", str(err)))
    if problems:
        raise ConfigError(problems)
    return dirs


def data_identity(dirs: dict[str, str]) -> str:
    """The content of every split (by hash), independent of where the shards are stored."""
    return json.dumps({split: read_manifest(path)["content_hash"] for split, path in sorted(dirs.items())})
