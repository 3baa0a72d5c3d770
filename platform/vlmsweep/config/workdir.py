"""The work directory: everything a run writes lives under one root.

Default `./.vlmsweep`, made absolute because Ray workers and Tune trials change their
working directory. Stage outputs, shards and checkpoints must later live on storage all
nodes see (NFS today, object stores through pyarrow.fs later): nothing here assumes the
driver's disk beyond this one root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORK_DIR = ".vlmsweep"


@dataclass(frozen=True)
class WorkDir:
    root: Path

    @classmethod
    def at(cls, path: str | Path | None = None) -> WorkDir:
        root = Path(path or os.environ.get("VLMSWEEP_WORK_DIR") or DEFAULT_WORK_DIR).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @property
    def presets(self) -> Path:
        return self.root / "presets"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    @property
    def ray_storage(self) -> Path:
        return self.root / "ray"

    @property
    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI wins; else a sqlite DB in the work dir (absolute: sqlite:////abs)."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.root / 'mlflow.db'}"
