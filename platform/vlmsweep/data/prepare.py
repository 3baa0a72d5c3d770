"""Make a variant's data splits exist as shard directories, and name their identity."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vlmsweep.config.errors import ConfigError
from vlmsweep.config.schema import DataConfig

from .shards import read_manifest
from .world import build_world


# Bump when the world generator's output changes (new splits, benchmark sets, wording):
# a world built by an older generator then lives in another directory, never reused stale.
WORLD_VERSION = 3


def world_dir(data: DataConfig, data_root: Path) -> Path:
    s = data.synthetic
    return data_root / f"world-v{WORLD_VERSION}-{s.size}-seed{s.seed}-px{s.image_size}"


def ensure_splits(data: DataConfig, data_root: str | Path) -> dict[str, str]:
    """split name -> absolute shard dir, generating the synthetic world on first use."""
    if data.source == "synthetic":
        root = world_dir(data, Path(data_root))
        if not (root / "world.json").is_file():
            build_world(root, seed=data.synthetic.seed, size=data.synthetic.size, image_size=data.synthetic.image_size)
        dirs = {split: str(root / sub) for split, sub in data.splits.items()}
    else:
        # ${VLMSWEEP_DATA}-style variables let one grid file serve every machine
        dirs = {split: str(Path(os.path.expandvars(path)).expanduser().resolve()) for split, path in data.splits.items()}
    problems = []
    for split, path in dirs.items():
        try:
            read_manifest(path)
        except (FileNotFoundError, ValueError) as err:
            problems.append((f"data.splits.{split}", str(err)))
    if problems:
        raise ConfigError(problems)
    return dirs


def data_identity(dirs: dict[str, str]) -> str:
    """The content of every split (by hash), independent of where the shards are stored."""
    return json.dumps({split: read_manifest(path)["content_hash"] for split, path in sorted(dirs.items())})
