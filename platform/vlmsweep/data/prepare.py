"""Make a variant's data splits exist as shard directories, and name their identity."""

from __future__ import annotations

import json
import os

from vlmsweep import storage
from vlmsweep.config.errors import ConfigError
from vlmsweep.config.schema import DataConfig
from vlmsweep.config.workdir import WorkDir

from .shards import read_manifest
from .world import build_world


# Bump when the world generator's output changes (new splits, benchmark sets, wording):
# a world built by an older generator then lives in another directory, never reused stale.
WORLD_VERSION = 3


def world_name(data: DataConfig) -> str:
    s = data.synthetic
    return f"world-v{WORLD_VERSION}-{s.size}-seed{s.seed}-px{s.image_size}"


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
                        image_size=data.synthetic.image_size)
        storage.upload_dir(local, root, last="world.json")
    return root


def ensure_splits(data: DataConfig, work: WorkDir) -> dict[str, str]:
    """split name -> shard dir (absolute path or URI), generating the synthetic world on first use."""
    if data.source == "synthetic":
        root = ensure_world(data, work)
        dirs = {split: storage.join(root, sub) for split, sub in data.splits.items()}
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
