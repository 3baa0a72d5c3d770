"""YAML → a resolved VariantConfig, with errors that point at the file and line.

A variant YAML may say:
    base: other.yaml          # start from another file and change only some fields (Prismatic-style)
    name, model, data, seed   # as in schema.VariantConfig
    recipe: base              # a named recipe, or {name: ..., stages: [...]} spelled out
    training: {...}           # merged into every stage's training block (scale, hardware)
    stages: {finetune: {...}} # merged into one named stage (per-stage changes)
Precedence: recipe defaults < training < stages.<name>.

YAML is read with bounds (nesting depth, values after alias expansion) and without duplicate
keys, which plain YAML would resolve silently by keeping the last.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import ConfigError, did_you_mean
from .fields import fields_at
from .recipes import get_recipe
from .schema import FieldProblem, VariantConfig

_TOP_LEVEL = {"base", "name", "model", "data", "recipe", "training", "stages", "eval", "seed"}
MAX_DEPTH = 32          # a variant is ~5 levels deep, a grid's axis values ~8
MAX_VALUES = 100_000    # after alias expansion: a "billion laughs" document stops here
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def deep_merge(base: dict, change: dict) -> dict:
    """A copy of `base` with `change` merged in (dicts merge key by key, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---------------------------------------------------------------- reading YAML


def parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """safe_load with bounds; returns (data, its node tree). Problems are a ConfigError on
    the field "yaml" whose source is 'source:line'."""
    try:
        _check_depth(text, source)
        node = yaml.compose(text, Loader=_Loader)
        if node is None:
            return None, None
        _check_size(node, source, {})
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_document(node), node
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise _syntax_error(err, source) from None
    except RecursionError:  # a long chain of aliases, each inside the next
        raise ConfigError([("yaml", "nested too deeply through its aliases")], source=source) from None


def _syntax_error(err: yaml.YAMLError, source: str) -> ConfigError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    parts = [getattr(err, "context", None), getattr(err, "problem", None)]
    message = ", ".join(p for p in parts if p) or str(err).splitlines()[0]
    return ConfigError([("yaml", message)], source=f"{source}:{mark.line + 1}" if mark else source)


def _check_depth(text: str, source: str) -> None:
    # on the event stream: composing the nodes recurses once per level, the parser does not
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError([("yaml", f"nested deeper than {MAX_DEPTH} levels")],
                                  source=f"{source}:{event.start_mark.line + 1}")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _check_size(node: yaml.Node, source: str, memo: dict) -> int:
    """How many values the node stands for once aliases are expanded (each node counted once
    per use, computed once per node); over MAX_VALUES is an error."""
    if id(node) in memo:
        if memo[id(node)] is None:
            raise ConfigError([("yaml", "an alias refers to the value it is part of")],
                              source=f"{source}:{node.start_mark.line + 1}")
        return memo[id(node)]
    memo[id(node)] = None  # being counted: meeting it again below is a cycle
    children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                else node.value if isinstance(node, yaml.SequenceNode) else [])
    size = 1 + sum(_check_size(child, source, memo) for child in children)
    if size > MAX_VALUES:
        raise ConfigError([("yaml", f"its aliases expand to more than {MAX_VALUES} values")],
                          source=f"{source}:{node.start_mark.line + 1}")
    memo[id(node)] = size
    return size


def _line_map(node: yaml.Node, source: str, prefix: str = "", out: dict | None = None) -> dict[str, str]:
    """Map every dotted field path in a YAML document to 'file:line'; a key given twice in one
    mapping is an error naming both lines."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, str] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            path = f"{prefix}.{key}" if prefix else key
            line = f"{source}:{key_node.start_mark.line + 1}"
            if key in seen:
                raise ConfigError([(path, f"duplicate key: at {seen[key]} and {line} (YAML would keep only "
                                          "the last)")], source=source, where={path: line})
            seen[key] = out[path] = line
            _line_map(value_node, source, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}.{i}"
            out[path] = f"{source}:{item.start_mark.line + 1}"
            _line_map(item, source, path, out)
    return out


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise ConfigError([("file", f"{path} is a directory, not a config file")], source=str(path))
    if not path.is_file():
        raise ConfigError([("file", f"no such config file: {path}")], source=str(path))
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([("file", f"not UTF-8 text (byte {err.start})")], source=str(path)) from None
    except OSError as err:
        raise ConfigError([("file", f"cannot read it ({err.strerror})")], source=str(path)) from None


def read_yaml(path: str | Path) -> tuple[dict, dict[str, str]]:
    """Parse a YAML mapping; returns (data, field path -> 'file:line')."""
    path = Path(path)
    data, node = parse_yaml(_read_text(path), str(path))
    if node is None:
        raise ConfigError([("file", "the file is empty (no fields; see experiments/smoke/variant.yaml)")],
                          source=str(path))
    if not isinstance(data, dict):
        raise ConfigError([("file", "the top level must be a mapping of fields")], source=str(path))
    return data, _line_map(node, str(path))


def base_file(base, path: Path, where: dict) -> Path | None:
    """The file a `base:` entry of `path` names (relative to `path`), or None without one."""
    if base is None:
        return None
    if not isinstance(base, str) or not base.strip():
        raise ConfigError([("base", f"must be a file path (a string), got {type(base).__name__} {base!r}")],
                          str(path), where)
    found = (path.parent / os.path.expanduser(base)).resolve()
    if not found.is_file():
        raise ConfigError([("base", f"no such file: {base} ({found})")], str(path), where)
    return found


def load_raw(path: str | Path, _chain: tuple[Path, ...] = ()) -> tuple[dict, dict[str, str]]:
    """Read a YAML file and the chain of `base:` files it extends, merged."""
    path = Path(path)
    data, where = read_yaml(path)
    base = base_file(data.pop("base", None), path, where)
    if base is None:
        return data, where
    chain = (*_chain, path.resolve())
    if base in chain:
        shown = " → ".join(os.path.relpath(p, chain[0].parent) for p in (*chain, base))
        raise ConfigError([("base", f"the base: files form a cycle: {shown}")], str(path), where)
    base_data, base_where = load_raw(base, chain)
    return deep_merge(base_data, data), {**base_where, **where}


# ---------------------------------------------------------------- --set KEY=VALUE


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n] + "..."


def parse_sets(pairs: list[str]) -> list[tuple[str, Any, str]]:
    """--set a.b.c=value pairs → (key, value, pair); values are read as YAML (3, 1e-3, true, [a, b])."""
    out = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ConfigError([("--set", f"{pair!r} is not KEY=VALUE (e.g. training.steps=20)")])
        if not all(key.split(".")):
            raise ConfigError([("--set", f"{pair!r}: the key {key!r} has an empty part")])
        try:
            value, _ = parse_yaml(text, "--set")
        except ConfigError as err:
            raise ConfigError([("--set", f"{_short(pair)}: {msg} (the value is read as YAML)")
                               for _, msg in err.problems]) from None
        out.append((key, value, pair))
    return out


def apply_sets(raw: dict, where: dict[str, str], sets: list[tuple[str, Any, str]],
               source: str | None = None) -> tuple[dict, dict[str, str]]:
    """`raw` with each --set applied (a mapping value merges, anything else replaces), and `where`
    saying "--set KEY=VALUE" for what they set. A key that runs through a value that isn't a
    mapping, or a plain value replacing a whole mapping, is an error."""
    raw, where = copy.deepcopy(raw), dict(where)
    for key, value, pair in sets:
        here = {key: f"--set {_short(pair)}"}
        *parents, leaf = key.split(".")
        node = raw
        for depth, part in enumerate(parents):
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                field = ".".join(parents[:depth + 1])
                raise ConfigError([(field, f"is {node[part]!r}, not a mapping: `--set {_short(pair)}` has "
                                           "nothing to set in it")], source, {**where, **here, field: here[key]})
            node = node[part]
        old = node.get(leaf)
        # model.vision may be one encoder's mapping or a list of fused encoders: either replaces the other
        fused = key == "model.vision" and isinstance(value, list)
        if isinstance(old, dict) and not isinstance(value, dict) and not fused:
            raise ConfigError([(key, f"is a mapping of fields, which `--set {_short(pair)}` would replace: set "
                                     f"one of them (e.g. --set {key}.FIELD=VALUE)")], source, {**where, **here})
        node[leaf] = deep_merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        # the set is where its key was written, and the parents it created (e.g. a misspelt block)
        created = {".".join(parents[:n]): here[key] for n in range(1, len(parents) + 1)}
        where = created | {k: v for k, v in where.items() if not k.startswith(key + ".")} | here
    return raw, where


# ---------------------------------------------------------------- resolving


def _merge_stage(stage: dict, change: dict) -> dict:
    """deep_merge, except that steps and epochs replace each other (a length is one or the other)."""
    merged = deep_merge(stage, change)
    new = (change or {}).get("training") or {}
    for mine, other in (("steps", "epochs"), ("epochs", "steps")):
        if new.get(mine) is not None and other not in new:
            merged["training"].pop(other, None)
    return merged


def resolve(raw: dict[str, Any], source: str | None = None, where: dict[str, str] | None = None) -> VariantConfig:
    """Turn a raw mapping into a fully resolved VariantConfig (all defaults filled in)."""
    try:
        return _resolve(raw, source, where or {})
    except ConfigError as err:
        if source and not err.source:  # e.g. a registry lookup: add the file and line
            raise err.with_location(source, where or {}) from None
        raise


def _shape_problems(training, per_stage, recipe) -> list[tuple[str, str]]:
    """The blocks resolve() merges itself must be mappings (pydantic checks everything else)."""
    problems = []
    if not isinstance(training, dict):
        problems.append(("training", f"must be a mapping of training fields (e.g. steps: 20), got {training!r}"))
    if not isinstance(per_stage, dict):
        problems.append(("stages", f"must be a mapping of stage name → changes, got {per_stage!r}"))
    else:
        for name, change in per_stage.items():
            if not isinstance(change, dict):
                problems.append((f"stages.{name}", f"must be a mapping of the stage's fields, got {change!r}"))
            elif not isinstance(change.get("training") or {}, dict):
                problems.append((f"stages.{name}.training", "must be a mapping of training fields"))
    if isinstance(recipe, dict):
        stages = recipe.get("stages")
        if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
            problems.append(("recipe.stages", "must be a list of stages, each a mapping"))
    elif not isinstance(recipe, str):
        problems.append(("recipe", "must be a recipe name or a mapping with name and stages"))
    return problems


def _resolve(raw: dict[str, Any], source: str | None, where: dict[str, str]) -> VariantConfig:
    unknown = sorted(set(raw) - _TOP_LEVEL, key=str)
    if unknown:
        allowed = sorted(_TOP_LEVEL - {"base"})
        problems = [(str(k), f"unknown field{did_you_mean(k, allowed)}; allowed: {', '.join(allowed)}")
                    for k in unknown]
        raise ConfigError(problems, source=source, where=where)
    raw = copy.deepcopy(raw)
    recipe = raw.pop("recipe", "base")
    training = raw.pop("training", {}) or {}
    per_stage = raw.pop("stages", {}) or {}
    problems = _shape_problems(training, per_stage, recipe)
    if problems:
        raise ConfigError(problems, source, where)
    if isinstance(recipe, str):
        recipe = {"name": recipe, "stages": get_recipe(recipe)}
    stages = recipe.get("stages") or []
    names = [str(s.get("name")) for s in stages]
    problems = [(f"stages.{n}", f"no stage {n!r} in recipe {recipe.get('name')!r}; stages: {', '.join(names)}")
                for n in per_stage if n not in names]
    if problems:
        raise ConfigError(problems, source=source, where=where)
    recipe["stages"] = [_merge_stage(_merge_stage(s, {"training": training}), per_stage.get(s.get("name"), {}))
                        for s in stages]
    raw["recipe"] = recipe
    try:
        return VariantConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_validation_problems(err, names, where), source=source, where=where) from None


def _validation_problems(err: ValidationError, names: list[str], where: dict[str, str]) -> list[tuple[str, str]]:
    """pydantic's errors as (field, message); one problem that several stages share (the top-level
    training block goes into each) is one line naming those stages."""
    stages_of: dict[tuple[str, str], list[str]] = {}
    for e in err.errors():
        if e["loc"][:2] == ("model", "vision") and e["loc"][2:3] in (("one",), ("fused",)):
            e["loc"] = e["loc"][:2] + e["loc"][3:]   # schema.VisionChoice's branch tag says nothing to a user
        field, stage = _field_of(list(e["loc"]), e, names, where)
        stages_of.setdefault((field, _message(e)), []).append(stage)
    out = []
    for (field, msg), stages in stages_of.items():
        named = [s for s in dict.fromkeys(stages) if s is not None]
        prefix = f"(stage {named[0]}) " if len(named) == 1 else f"(stages {', '.join(named)}) " if named else ""
        out.append((field, prefix + msg))
    return out


def _field_of(loc: list, e: dict, names: list[str], where: dict[str, str]) -> tuple[str, str | None]:
    """The field a user would look for, and the stage it broke when it was set for every stage."""
    blamed = (e.get("ctx") or {}).get("error")
    if isinstance(blamed, FieldProblem):  # a block-level check that one of its fields is to blame for
        loc = [*loc, blamed.field]
    if loc[:2] == ["recipe", "stages"] and len(loc) > 2 and isinstance(loc[2], int):
        # name the stage rather than its index, and point at where the user wrote it
        stage = names[loc[2]] if loc[2] < len(names) else str(loc[2])
        rest = [str(p) for p in loc[3:]]
        if rest and rest[0] == "training" and f"stages.{stage}.{'.'.join(rest)}" not in where:
            # set in the top-level training block: point there, say which stage it broke
            return ".".join(["training"] + rest[1:]), stage
        return ".".join(["stages", stage] + rest), None
    return ".".join(str(p) for p in loc), None


def _message(e: dict) -> str:
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        return "unknown field" + (did_you_mean(e["loc"][-1], fields_at(VariantConfig, e["loc"][:-1])) or " (check the spelling)")
    if e["type"] == "literal_error":
        allowed = re.findall(r"'([^']*)'", (e.get("ctx") or {}).get("expected", ""))
        return f"{msg} (got {e.get('input')!r}){did_you_mean(e.get('input'), allowed)}"
    return msg


def load_located(path: str | Path, sets: list[tuple[str, Any, str]] = ()) -> tuple[VariantConfig, dict[str, str]]:
    """Load and resolve a variant YAML with --set changes (parse_sets) on top; also returns where
    each field was written (file:line, or the --set), for errors found later."""
    raw, where = load_raw(path)
    if sets:
        raw, where = apply_sets(raw, where, list(sets), str(path))
    return resolve(raw, source=str(path), where=where), where


def load_variant(path: str | Path, changes: dict | None = None) -> VariantConfig:
    """Load and resolve a variant YAML; `changes` (a nested mapping) are merged on top."""
    raw, where = load_raw(path)
    if changes:
        raw = deep_merge(raw, changes)
    return resolve(raw, source=str(path), where=where)


def dump_resolved(cfg: VariantConfig) -> str:
    """The resolved config as YAML: saved with every stage output and logged to MLflow."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
