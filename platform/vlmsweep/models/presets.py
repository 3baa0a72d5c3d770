"""Tiny presets on disk: written once with save_pretrained, then loaded like any checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from vlmsweep.config.errors import ConfigError
from vlmsweep.config.workdir import ZOO_INFO  # written by `vlmsweep zoo build` next to each artifact

T = TypeVar("T")


def preset_dir(root: str | Path, kind: str, family: str) -> Path:
    return Path(root) / f"{kind}-{family}-tiny"


def seeded_init(build: Callable[[], T]) -> T:
    """A preset's random weights: seeded, so a preset is the same on every machine; in a forked
    RNG, so that building one (on a node that had none yet) leaves the caller's draws as they
    were. The next draw is the connector's initialisation, which the variant's seed alone decides."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def save_model(model, out: Path) -> None:
    """config.json (+ generation_config.json) and model.safetensors, whatever process writes them.

    Not `model.save_pretrained`: inside a torch.distributed group it writes weights only on rank 0
    (transformers' should_save_on_this_rank), so a preset first needed by a rank-1 Train worker,
    on a node with its own cache, came out as a config without weights."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    if getattr(model, "generation_config", None) is not None and model.can_generate():
        model.generation_config.save_pretrained(out)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})


def materialize(target: Path, write: Callable[[Path], None]) -> Path:
    """Create `target` by calling write(tmpdir) then renaming; safe when processes race.

    The rename is atomic, so a reader never sees a half-written preset; a process that
    loses the race throws its copy away (the content is deterministic, so both are equal).
    """
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        (tmp / ".complete").touch()
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target




class ZooNotBuiltError(ConfigError):
    """A zoo:<name> checkpoint whose artifact isn't in the work dir yet (a dry-run notes it)."""


def zoo_checkpoint(checkpoint: str, preset_root: str | Path, field: str) -> str | None:
    """"zoo:<name>" → <work>/zoo/<name> (the sibling of the presets dir); None for other names.

    Raises ZooNotBuiltError (on `field`) naming the built artifacts when <name> isn't built.
    """
    if not checkpoint.startswith("zoo:"):
        return None
    name = checkpoint[4:]
    zoo = Path(preset_root).resolve().parent / "zoo"
    built = lambda d: (d / ".complete").exists() or (d / "config.json").exists()  # noqa: E731
    if name and "/" not in name and not name.startswith(".") and built(zoo / name):
        return str(zoo / name)
    names = sorted(d.name for d in zoo.iterdir() if d.is_dir() and not d.name.startswith(".") and built(d)) \
        if zoo.is_dir() else []
    raise ZooNotBuiltError([(field, f"{checkpoint} is not built in {zoo}: run `vlmsweep zoo build`; "
                                    f"built: {', '.join(names) or 'none'}")])


def zoo_key(checkpoint: str, preset_root: str | Path) -> str | None:
    """The content key of a built zoo:<name> artifact (None for other names, or not built).

    Stage ids include it: a zoo rebuilt from other data or another spec keeps its name but
    must not let stages trained on the old weights be reused."""
    if not checkpoint.startswith("zoo:"):
        return None
    try:
        path = zoo_checkpoint(checkpoint, preset_root, "checkpoint")
        return json.loads((Path(path) / ZOO_INFO).read_text()).get("key")
    except (ZooNotBuiltError, OSError, ValueError):
        return None
