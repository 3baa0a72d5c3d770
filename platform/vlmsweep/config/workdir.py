"""The work directory: everything a run writes lives under one location, a URI.

`./.vlmsweep` by default (made absolute: Ray workers and Tune trials change their working
directory), or `--work-dir` / `$VLMSWEEP_WORK_DIR`: a local path (an NFS mount is one),
`file://`, `s3://` or `gs://`. It is read and written only through `vlmsweep.storage`, and
travels through the code as this one object (picklable: it is just the URI).

    data/         the generated world's shards and benchmark sets
    stages/<id>/  stage outputs (weights, manifest, eval results)
    ray/          Ray Train / Tune checkpoints and experiment state
    zoo/<name>/   pretrained tiny parts (`vlmsweep zoo build`)
    reports/      ablation reports

What must sit on the node's own disk (tiny presets, which every node builds identically,
and copies of the zoo) lives under `local_root`: the work dir itself when it is local,
else a node-local cache (`$VLMSWEEP_CACHE`, default ~/.cache/vlmsweep).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from vlmsweep import storage

from .errors import InputError

DEFAULT_WORK_DIR = ".vlmsweep"
ZOO_INFO = "zoo.json"  # next to each zoo artifact; its "key" names the artifact's content


@dataclass(frozen=True)
class WorkDir:
    uri: str

    @classmethod
    def at(cls, location: str | os.PathLike | None = None) -> WorkDir:
        given = str(location or os.environ.get("VLMSWEEP_WORK_DIR") or DEFAULT_WORK_DIR)
        field = "--work-dir" if location else "VLMSWEEP_WORK_DIR" if os.environ.get("VLMSWEEP_WORK_DIR") else "--work-dir"
        if given.startswith(("http://", "https://", "ray://")):
            raise InputError([(field, f"{given!r} is not storage: give a local path, file://, s3:// or gs://")])
        work = cls(storage.normalize(given))
        if work.is_remote:
            bucket = "/".join(work.uri.split("/", 3)[:3])
            try:
                reachable = storage.is_dir(bucket)
            except OSError as err:
                raise InputError([(field, f"{given}: cannot reach the store ({err}); S3 is configured by "
                                           "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                                           "AWS_DEFAULT_REGION")]) from None
            if not reachable:
                raise InputError([(field, f"{given}: bucket {bucket} does not exist (create it first)")])
        else:
            path = Path(work.uri)
            if path.exists() and not path.is_dir():
                raise InputError([(field, f"{given} is a file, not a directory")])
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise InputError([(field, f"{given}: cannot create it ({err.strerror})")]) from None
        return work

    @property
    def is_remote(self) -> bool:
        return storage.is_remote(self.uri)

    def path(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)

    @property
    def data(self) -> str:
        return self.path("data")

    @property
    def stages(self) -> str:
        return self.path("stages")

    @property
    def ray_storage(self) -> str:
        return self.path("ray")

    @property
    def zoo(self) -> str:
        return self.path("zoo")

    @property
    def reports(self) -> str:
        return self.path("reports")

    @property
    def local_root(self) -> Path:
        """The work dir itself when local; else this node's cache for it (one per work dir URI)."""
        if not self.is_remote:
            return Path(self.uri)
        return storage.cache_root() / "work" / hashlib.sha256(self.uri.encode()).hexdigest()[:12]

    @property
    def presets(self) -> Path:
        """Tiny presets on this node's disk: deterministic, so each node writes its own."""
        return self.local_root / "presets"

    def model_root(self) -> str:
        """The node-local root the model loaders read (presets, and `zoo/` beside it), with the
        work dir's zoo fetched into it first when the work dir is remote."""
        if self.is_remote:
            _sync_zoo(self.uri, str(self.local_root / "zoo"))
        return str(self.presets)

    def check_tracking_store(self, reading_sweep: str | None = None) -> None:
        """A local tracking store that can't be used is one line naming MLFLOW_TRACKING_URI (or
        --work-dir), not SQLAlchemy's traceback; a report (`reading_sweep`) also needs the database
        to exist rather than have MLflow create an empty one just to find nothing in it."""
        uri = self.tracking_uri
        field = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "--work-dir"
        if "://" in uri and not uri.startswith(("sqlite:", "file:")):
            return  # a server (http, databricks, postgresql...) answers for itself
        if not uri.startswith("sqlite:"):
            if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
                raise InputError([(field, f"{uri} is a folder, MLflow's file store, which MLflow 3 refuses: give "
                                          "sqlite:///PATH/mlflow.db or an http(s):// tracking server")])
            return
        path = Path(uri.removeprefix("sqlite:///").split("?")[0])
        problem = _database_problem(path)
        if problem is None and reading_sweep is not None and not path.exists():
            problem = f"no sweep {reading_sweep!r}: no MLflow database at {path} (nothing was tracked there yet)"
        if problem:
            raise InputError([(field, problem)])

    @property
    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI wins; else a sqlite DB on this machine (absolute: sqlite:////abs).

        A cluster needs a tracking server: sweep/ray_cluster.check_tracking refuses the rest."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.local_root / 'mlflow.db'}"


def _database_problem(path: Path) -> str | None:
    """Why sqlite can't open or create the database file `path`, or None."""
    if path.is_dir():
        return f"{path} is a directory, not a database file"
    parent = path.parent
    while not parent.exists():  # MLflow creates the missing folders
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {path}: {parent} is a file, not a directory"
    if not os.access(path if path.exists() else parent, os.W_OK):
        return f"cannot write {path}: {'it' if path.exists() else parent} is not writable"
    return None


@lru_cache(maxsize=8)
def _sync_zoo(zoo_uri_root: str, local_zoo: str) -> None:
    """Copy every zoo artifact whose content key differs from the local copy's (once per process)."""
    remote = storage.join(zoo_uri_root, "zoo")
    for name in storage.list_dir(remote):
        try:
            key = json.loads(storage.read_text(storage.join(remote, name, ZOO_INFO))).get("key")
        except (FileNotFoundError, ValueError):
            continue  # an unfinished build: not an artifact yet
        local = Path(local_zoo) / name
        try:
            if json.loads((local / ZOO_INFO).read_text()).get("key") == key:
                continue
        except (OSError, ValueError):
            pass
        copy = storage.local_copy(storage.join(remote, name), f"zoo/{name}/{key}")
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{name}.link")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(copy, target_is_directory=True)
        if local.is_symlink() or not local.exists():
            os.replace(tmp, local)
        else:  # a real directory from an older layout: replace it
            import shutil

            shutil.rmtree(local)
            os.replace(tmp, local)
