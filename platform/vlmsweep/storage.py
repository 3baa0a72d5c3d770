"""Storage: the one module that reads and writes the work dir, through pyarrow.fs.

A location is a URI string: a local path (an NFS mount is just a local path), `file://…`,
`s3://bucket/…` or `gs://bucket/…`. S3-compatible stores are configured only by the standard
AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION),
which pyarrow's S3 client reads itself, so MinIO, moto or real S3 need no code change.

Everything in a work dir is written once and never changed in place (stage outputs, shards,
zoo artifacts are named by content), so a process that needs files on its own disk
(transformers loads directories, benchmarks read images) fetches a directory once into a
node-local cache keyed by that content (`local_copy`). Nothing assumes that two processes
share a disk: a local work dir is simply read where it is.

This module imports nothing from vlmsweep: every layer may use it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import pyarrow.fs as pafs

REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://", "abfss://")
COMPLETE = ".complete"   # written last into a cached copy: its presence means the copy is whole


class StorageError(OSError):
    """A location that can't be read or written, with the URI in the message."""


def is_remote(uri: str | os.PathLike) -> bool:
    return str(uri).startswith(REMOTE_SCHEMES)


def normalize(uri: str | os.PathLike) -> str:
    """A canonical URI: remote ones as given (no trailing slash), local ones as absolute paths."""
    text = str(uri)
    if is_remote(text):
        return text.rstrip("/")
    if text.startswith("file://"):
        text = text[len("file://"):]
    return str(Path(text).expanduser().resolve())


def join(uri: str, *parts: str) -> str:
    if is_remote(uri):
        return "/".join([uri.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(uri, *parts))


def name(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def parent(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[0] if is_remote(uri) else str(Path(uri).parent)


@lru_cache(maxsize=16)
def _filesystem(scheme_and_bucket: str) -> pafs.FileSystem:
    fs, _ = pafs.FileSystem.from_uri(scheme_and_bucket)
    return fs


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow FileSystem, path inside it) for a location; one client per bucket and process."""
    uri = str(uri)
    if not is_remote(uri):
        return pafs.LocalFileSystem(), normalize(uri)
    scheme, rest = uri.split("://", 1)
    bucket = rest.split("/", 1)[0]
    try:
        return _filesystem(f"{scheme}://{bucket}"), rest.rstrip("/")
    except (OSError, ValueError) as err:
        raise StorageError(f"{uri}: cannot open this storage ({err})") from None


def _info(uri: str) -> pafs.FileInfo:
    fs, path = filesystem(uri)
    try:
        return fs.get_file_info(path)
    except OSError as err:
        raise StorageError(f"{uri}: {err}") from None


def exists(uri: str) -> bool:
    return _info(uri).type != pafs.FileType.NotFound


def is_file(uri: str) -> bool:
    return _info(uri).type == pafs.FileType.File


def is_dir(uri: str) -> bool:
    return _info(uri).type == pafs.FileType.Directory


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as err:
        if "not found" in str(err).lower() or "does not exist" in str(err).lower():
            raise FileNotFoundError(f"{uri}: no such file") from None
        raise StorageError(f"{uri}: {err}") from None


def read_text(uri: str) -> str:
    return read_bytes(uri).decode()


def write_bytes(uri: str, data: bytes) -> None:
    """Whole or absent: locally through a temp name and a rename; an object PUT is atomic anyway."""
    fs, path = filesystem(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", dir=Path(path).parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    try:
        with fs.open_output_stream(path) as f:
            f.write(data)
    except OSError as err:
        raise StorageError(f"{uri}: cannot write ({err})") from None


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode())


def list_dir(uri: str) -> list[str]:
    """Names directly under a directory (empty if it doesn't exist)."""
    fs, path = filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as err:
        raise StorageError(f"{uri}: {err}") from None
    return sorted(Path(i.path).name for i in infos)


def make_dirs(uri: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(path, recursive=True)


def delete_dir(uri: str) -> None:
    fs, path = filesystem(uri)
    if exists(uri):
        fs.delete_dir(path)


def upload_dir(local_dir: str | Path, uri: str, last: str | None = None) -> None:
    """Copy a local directory tree to `uri`; the file named `last` (a manifest) goes after the rest,
    so a reader that waits for it never sees a partial directory."""
    local_dir = Path(local_dir)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == last)  # stable: `last` moves to the end
    for p in files:
        rel = p.relative_to(local_dir).as_posix()
        if not is_remote(uri):
            target = Path(uri, rel)
            if target.resolve() == p.resolve():
                continue
        write_bytes(join(uri, rel), p.read_bytes())


def download_dir(uri: str, local_dir: str | Path) -> Path:
    """Copy a directory tree from `uri` into `local_dir` (created)."""
    fs, path = filesystem(uri)
    local_dir = Path(local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: no such directory") from None
    except OSError as err:
        raise StorageError(f"{uri}: {err}") from None
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(path):].lstrip("/")
        target = local_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return local_dir


def cache_root() -> Path:
    """This node's cache: $VLMSWEEP_CACHE, else ~/.cache/vlmsweep (never the work dir itself)."""
    return Path(os.environ.get("VLMSWEEP_CACHE") or Path.home() / ".cache" / "vlmsweep").expanduser()


def local_copy(uri: str, key: str) -> Path:
    """A directory on this node's disk with the content of `uri`.

    Local locations are read in place. A remote one is downloaded once into the cache under
    `key`, which must name its content (a stage id, a zoo key): an equal key is equal content,
    so a cached copy never goes stale. Concurrent fetches race safely (rename is atomic).
    """
    if not is_remote(uri):
        return Path(normalize(uri))
    safe = hashlib.sha256(key.encode()).hexdigest()[:12]
    target = cache_root() / "copies" / f"{name(key)[:48]}-{safe}"
    if (target / COMPLETE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        download_dir(uri, tmp)
        (tmp / COMPLETE).touch()
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / COMPLETE).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ray_storage(uri: str) -> tuple[str, pafs.FileSystem | None]:
    """(storage_path, storage_filesystem) for Ray Train / Tune RunConfig."""
    if not is_remote(uri):
        return normalize(uri), None
    fs, path = filesystem(uri)
    return path, fs
