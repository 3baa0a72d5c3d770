"""YAML → a resolved VariantConfig, with errors that point at the file and line.

A variant YAML may say:
    base: other.yaml          # start from another file and change only some fields (Prismatic-style)
    name, model, data, seed   # as in schema.VariantConfig
    recipe: base              # a named recipe, or {name: ..., stages: [...]} spelled out
    training: {...}           # merged into every stage's training block (scale, hardware)
    stages: {finetune: {...}} # merged into one named stage (per-stage changes)
Precedence: recipe defaults < training < stages.<name>.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import ConfigError
from .recipes import get_recipe
from .schema import VariantConfig

_TOP_LEVEL = {"base", "name", "model", "data", "recipe", "training", "stages", "eval", "seed"}


def deep_merge(base: dict, change: dict) -> dict:
    """A copy of `base` with `change` merged in (dicts merge key by key, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _line_map(node: yaml.Node, source: str, prefix: str = "", out: dict | None = None) -> dict[str, str]:
    """Map every dotted field path in a YAML document to 'file:line'."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            out[path] = f"{source}:{key_node.start_mark.line + 1}"
            _line_map(value_node, source, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}.{i}"
            out[path] = f"{source}:{item.start_mark.line + 1}"
            _line_map(item, source, path, out)
    return out


def read_yaml(path: str | Path) -> tuple[dict, dict[str, str]]:
    """Parse a YAML mapping; returns (data, field path -> 'file:line')."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([("file", f"no such config file: {path}")], source=str(path))
    text = path.read_text()
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError([("yaml", f"{err}")], source=where) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([("file", "the top level must be a mapping of fields")], source=str(path))
    return data, (_line_map(node, str(path)) if node is not None else {})


def load_raw(path: str | Path) -> tuple[dict, dict[str, str]]:
    """Read a YAML file and the chain of `base:` files it extends, merged."""
    data, where = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data, where
    base_path = (Path(path).parent / base).resolve()
    base_data, base_where = load_raw(base_path)
    return deep_merge(base_data, data), {**base_where, **where}


def _merge_stage(stage: dict, change: dict) -> dict:
    """deep_merge, except that steps and epochs replace each other (a length is one or the other)."""
    merged = deep_merge(stage, change)
    new = (change or {}).get("training") or {}
    for mine, other in (("steps", "epochs"), ("epochs", "steps")):
        if new.get(mine) is not None and other not in new:
            merged["training"].pop(other, None)
    return merged


def _stage_label(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def resolve(raw: dict[str, Any], source: str | None = None, where: dict[str, str] | None = None) -> VariantConfig:
    """Turn a raw mapping into a fully resolved VariantConfig (all defaults filled in)."""
    try:
        return _resolve(raw, source, where or {})
    except ConfigError as err:
        if source and not err.source:  # e.g. a registry lookup: add the file and line
            raise err.with_location(source, where or {}) from None
        raise


def _resolve(raw: dict[str, Any], source: str | None, where: dict[str, str]) -> VariantConfig:
    unknown = sorted(set(raw) - _TOP_LEVEL)
    if unknown:
        problems = [(k, f"unknown field; allowed: {', '.join(sorted(_TOP_LEVEL - {'base'}))}") for k in unknown]
        raise ConfigError(problems, source=source, where=where)
    raw = copy.deepcopy(raw)
    recipe = raw.pop("recipe", "base")
    training = raw.pop("training", {}) or {}
    per_stage = raw.pop("stages", {}) or {}
    if isinstance(recipe, str):
        recipe = {"name": recipe, "stages": get_recipe(recipe)}
    elif not isinstance(recipe, dict):
        raise ConfigError([("recipe", "must be a recipe name or a mapping with name and stages")], source, where)
    stages = recipe.get("stages") or []
    names = [s.get("name") for s in stages if isinstance(s, dict)]
    problems = [(f"stages.{n}", f"no stage {n!r} in recipe {recipe.get('name')!r}; stages: {', '.join(map(str, names))}")
                for n in per_stage if n not in names]
    if problems:
        raise ConfigError(problems, source=source, where=where)
    recipe["stages"] = [_merge_stage(_merge_stage(s, {"training": training}), per_stage.get(s.get("name"), {}))
                        for s in stages]
    raw["recipe"] = recipe
    try:
        return VariantConfig.model_validate(raw)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = list(e["loc"])
            # name the stage rather than its index, and point at where the user wrote it
            if loc[:2] == ["recipe", "stages"] and len(loc) > 2 and isinstance(loc[2], int):
                stage = names[loc[2]] if loc[2] < len(names) else loc[2]
                rest = [str(p) for p in loc[3:]]
                field = ".".join(["stages", str(stage)] + rest)
                prefix = ""
                if rest and rest[0] == "training" and f"stages.{stage}.{'.'.join(rest)}" not in where:
                    # set in the top-level training block: point there, say which stage it broke
                    field, prefix = ".".join(["training"] + rest[1:]), f"(stage {stage}) "
            else:
                field, prefix = _stage_label(tuple(loc)), ""
            msg = prefix + e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling)"
            elif e["type"] == "literal_error":
                msg = f"{msg} (got {e.get('input')!r})"
            problems.append((field, msg))
        raise ConfigError(problems, source=source, where=where) from None


def load_variant(path: str | Path, changes: dict | None = None) -> VariantConfig:
    """Load and resolve a variant YAML; `changes` (e.g. from the CLI) are merged on top."""
    raw, where = load_raw(path)
    if changes:
        raw = deep_merge(raw, changes)
    return resolve(raw, source=str(path), where=where)


def dump_resolved(cfg: VariantConfig) -> str:
    """The resolved config as YAML: saved with every stage output and logged to MLflow."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
