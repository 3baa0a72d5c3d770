"""Checks before Ray starts that need more than the config layer: the registries and model
shapes (models.check), benchmark names, the LLM's positions, checkpoints that look like local
paths, and what a local cluster has. Every problem points at the line the user wrote.

`vlmsweep check`, `sweep --dry-run`, `run` and `sweep` all come here first, so a mistake
costs seconds, not a Ray start.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vlmsweep.config.errors import ConfigError
from vlmsweep.config.grid import Grid, variants_error
from vlmsweep.config.schema import VariantConfig
from vlmsweep.config.workdir import WorkDir

# a Hub model id: "name" or "org/name" (huggingface_hub's validate_repo_id, simplified)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
# sweep/tune.py DATA_RESERVE: a running training stage's Ray Data pipeline holds one more CPU
_DATA_PIPELINE_CPUS = 1.0
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def check(grid: Grid, work: WorkDir, *, offline_ok: bool = False, local_cluster: bool = False) -> list[str]:
    """Raise one ConfigError with every variant's problems; returns notes on what went unchecked.
    local_cluster: the stages must also fit this machine (the CPUs and GPUs Ray would get)."""
    preset_root = work.model_root()
    found, notes = [], []
    for v in grid.variants:
        try:
            notes += check_variant(v.config, preset_root, v.where, offline_ok=offline_ok, local_cluster=local_cluster)
        except ConfigError as err:
            found += [(v.name, f, m, written_at(f, v.where, grid.source)) for f, m in err.problems]
    if not found:
        return sorted(set(notes))
    if len(grid.variants) == 1 and not grid.axes:  # a variant file: its own fields, no "[variant]"
        raise ConfigError([(f, m) for _, f, m, _ in found], grid.source, {f: loc for _, f, m, loc in found})
    raise variants_error(found, grid.source)


def check_variant(cfg: VariantConfig, preset_root: str, where: dict[str, str] | None = None, *,
                  offline_ok: bool = False, local_cluster: bool = False) -> list[str]:
    """One variant's problems (ConfigError, fields as the config names them: `where` says which
    fields the user wrote, see _training_field); returns notes."""
    where = where or {}
    from vlmsweep.eval.run import check_eval

    problems = checkpoint_problems(cfg)
    if problems:  # a missing local checkpoint would only fail again, less clearly, below
        raise ConfigError(problems)
    notes = _model_checks(cfg, preset_root, offline_ok)
    problems = position_problems(cfg, preset_root, where)
    if cfg.data.source == "synthetic":
        from vlmsweep.data.world.build import mix_problems

        problems += mix_problems(cfg.data.synthetic.mix)
    problems += resource_problems(cfg, where) if local_cluster else []
    try:
        check_eval(cfg.eval)
    except ConfigError as err:
        problems += err.problems
    if problems:
        raise ConfigError(problems)
    return notes


def _model_checks(cfg: VariantConfig, preset_root: str, offline_ok: bool) -> list[str]:
    from vlmsweep.models.check import check_variant as check_models

    try:
        return check_models(cfg, preset_root, offline_ok=offline_ok)
    except OSError as err:  # transformers: no such model on the Hub, or no way to reach it
        field, checkpoint = _unreadable(cfg, preset_root)
        raise ConfigError([(field, f"cannot read the config of {checkpoint!r}: {str(err).strip().splitlines()[0]} "
                                   "(`vlmsweep sweep --dry-run` checks the rest without it)")]) from None


def _unreadable(cfg: VariantConfig, preset_root: str) -> tuple[str, str]:
    """(field, checkpoint) of the model part whose config can't be read here."""
    from vlmsweep.models.llm import llm_config
    from vlmsweep.models.vision import vision_config

    for field, part_cfg in cfg.model.checkpoints():
        read = llm_config if field == "model.llm" else vision_config
        try:
            read(part_cfg, preset_root)
        except OSError:
            return f"{field}.checkpoint", part_cfg.checkpoint
        except Exception:  # another problem with this part: check_models reports it
            continue
    return "model", " or ".join(c.checkpoint for _, c in cfg.model.checkpoints())


def written_at(field: str, where: dict[str, str], source: str) -> str:
    """The file:line that set `field`: its own line or its deepest written ancestor. A stage's
    field no stage block wrote came from the top-level training block, else from the recipe."""
    parts = field.split(".")
    floor = 2 if parts[0] == "stages" else 1  # a `stages:` line says nothing about another stage
    for n in range(len(parts), floor - 1, -1):
        if ".".join(parts[:n]) in where:
            return where[".".join(parts[:n])]
    if parts[0] == "stages" and len(parts) > 3 and parts[2] == "training":
        return written_at(".".join(["training", *parts[3:]]), where, source)
    if parts[0] == "stages":
        return where.get("recipe") or source
    return source


# ---------------------------------------------------------------- checkpoints


def uses_hub(cfg: VariantConfig) -> bool:
    """Whether a checkpoint is a Hub name (not tiny, zoo:NAME or a local path)."""
    return any(c.checkpoint != "tiny" and not c.checkpoint.startswith("zoo:") and not looks_like_path(c.checkpoint)
               for _, c in cfg.model.checkpoints())


def looks_like_path(checkpoint: str) -> bool:
    """/abs, ./rel, ~/home, or a/b/c: a local directory, not a Hub id (org/name) or zoo:<name>."""
    if checkpoint == "tiny" or checkpoint.startswith("zoo:"):
        return False
    return checkpoint.startswith(("/", ".", "~")) or (os.sep in checkpoint and not _HUB_ID.fullmatch(checkpoint))


def checkpoint_problems(cfg: VariantConfig) -> list[tuple[str, str]]:
    problems = []
    for field, c in cfg.model.checkpoints():
        if looks_like_path(c.checkpoint) and not Path(os.path.expanduser(c.checkpoint)).is_dir():
            problems.append((f"{field}.checkpoint", f"no such directory: {c.checkpoint} (a local checkpoint; "
                                                         "Hub names look like org/name, zoo parts zoo:NAME)"))
    return problems


# ---------------------------------------------------------------- positions


def max_positions(cfg: VariantConfig, preset_root: str) -> int | None:
    """The LLM's position limit from its config, or None where the config can't be read here
    (a Hub model offline: only this check is skipped) or names no limit."""
    from vlmsweep.models.llm import llm_config

    try:
        config = llm_config(cfg.model.llm, preset_root)
    except (OSError, ConfigError, ValueError):
        return None
    return next((int(getattr(config, k)) for k in _POSITION_KEYS if getattr(config, k, None)), None)


def position_problems(cfg: VariantConfig, preset_root: str, where: dict[str, str]) -> list[tuple[str, str]]:
    limit = max_positions(cfg, preset_root)
    if limit is None:
        return []
    stages = {}
    for stage in cfg.recipe.stages:
        if stage.training.max_length > limit:
            stages.setdefault(stage.training.max_length, []).append(stage.name)
    return [(_training_field(names, "max_length", where), f"{length} is more than the LLM's {limit} positions "
             f"(max_position_embeddings of {cfg.model.llm.checkpoint!r}); stage(s): {', '.join(names)}")
            for length, names in stages.items()]


def _training_field(stages: list[str], name: str, where: dict[str, str]) -> str:
    """The training field that gave these stages one value, as the user wrote it: the stage's
    own block, else the top-level one (several stages share a value through it), else the
    stage's recipe default."""
    if len(stages) == 1 and f"stages.{stages[0]}.training.{name}" in where:
        return f"stages.{stages[0]}.training.{name}"
    if f"training.{name}" in where or len(stages) > 1:
        return f"training.{name}"
    return f"stages.{stages[0]}.training.{name}"


# ---------------------------------------------------------------- resources of a local cluster


def local_resources() -> tuple[float, int]:
    """(CPUs, GPUs) a local Ray cluster gets on this machine: Ray's own CPU count (cgroup
    limits included) and torch's CUDA devices."""
    import torch

    try:
        from ray._private.utils import get_num_cpus

        cpus = float(get_num_cpus())
    except Exception:  # a private helper: fall back to what the OS says
        cpus = float(os.cpu_count() or 1)
    return cpus, torch.cuda.device_count() if torch.cuda.is_available() else 0


def resource_problems(cfg: VariantConfig, where: dict[str, str]) -> list[tuple[str, str]]:
    """Stages that could never start on the local cluster (Tune would wait for them forever)."""
    cpus, gpus = local_resources()
    problems: dict[tuple[str, str], list[str]] = {}
    for stage in cfg.recipe.stages:
        t = stage.training
        need = t.workers * t.cpus_per_worker + _DATA_PIPELINE_CPUS
        if need > cpus:
            blamed = "cpus_per_worker" if t.cpus_per_worker > cpus else "workers"
            problems.setdefault((blamed, f"workers × cpus_per_worker = {t.workers} × {t.cpus_per_worker:g} CPUs "
                                         f"(+{_DATA_PIPELINE_CPUS:g} for the data pipeline) is more than the "
                                         f"{cpus:g} CPUs of this machine's local Ray cluster"), []).append(stage.name)
        if t.gpus_per_worker and t.workers * t.gpus_per_worker > gpus:
            have = f"only {gpus}" if gpus else "no"
            problems.setdefault(("gpus_per_worker", f"workers × gpus_per_worker = {t.workers * t.gpus_per_worker:g} "
                                                    f"GPUs, this machine's local Ray cluster has {have} GPU"),
                                []).append(stage.name)
    return [(_training_field(stages, name, where), msg) for (name, msg), stages in problems.items()]
