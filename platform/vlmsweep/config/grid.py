"""Grid expansion: a grid YAML → the variants of one ablation sweep, each fully resolved.

A grid YAML says:
    name: smoke-grid                  # the sweep's name (default: the file's stem)
    base: smoke/variant.yaml          # a variant file, relative to this file (optional)
    variant: {...}                    # inline variant fields merged over base (optional)
    naming: "TinyLLaVA-{recipe}-{vision}-{llm}"
    axes:                             # YAML order; the first axis varies slowest
      vision: [{label: Sig, family: siglip}, ...]   # shorthand → model.vision
      training.max_length: [256, 512]               # any other field by its dotted path
    include: [{vision: Sig}]          # keep combinations matching at least one rule (first)
    exclude: [{recipe: share, llm: Phi}]            # then drop those matching all of a rule

Shorthand axes: vision → model.vision, llm → model.llm, connector → model.connector,
data → data, recipe → recipe, seed → seed. A mapping value is merged in (its `label` key is
removed first); a plain value of vision/llm/connector/data sets the field that names it
(family, family, name, name); anything else replaces the field (a list of mappings under
vision: fused encoders).

Labels: `{label: L, value: V}` is V labelled L (for lists, mappings and plain values, e.g. fused
encoders named as their paper names them); otherwise a mapping's `label`, else its naming
field (vision/llm `family`, connector/data/recipe `name`); a mapping without either is an error (str() of a dict makes no usable name). A list
is labelled by its items joined with "+" (a mapping item by its label or naming field), any
other value by str(value).

Names: `naming` is filled in with each variant's labels. A placeholder that is not an axis of
this grid but is a shorthand name renders what the variant's merged config says (e.g. its
recipe name or vision family, schema defaults when unset). Variants that still share a name
(an axis missing from the pattern) get each axis that differs among them appended, in axis
order: "-seed1" for seed (a bare number says nothing), "-{label}" for any other axis.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ConfigError, did_you_mean
from .load import apply_sets, base_file, deep_merge, load_located, load_raw, read_yaml, resolve
from .schema import ConnectorConfig, DataConfig, LLMConfig, VariantConfig, VisionConfig, name_problem

DEFAULT_NAMING = "TinyLLaVA-{recipe}-{vision}-{llm}"
_GRID_KEYS = {"name", "base", "variant", "naming", "axes", "include", "exclude"}
# shorthand axis → where its value goes in the raw variant mapping
_SHORTHAND = {"vision": ("model", "vision"), "llm": ("model", "llm"), "connector": ("model", "connector"),
              "data": ("data",), "recipe": ("recipe",), "seed": ("seed",)}
# the field that names a mapping value (its default label, and what a plain string sets)
_NAME_FIELD = {"vision": "family", "llm": "family", "connector": "name", "data": "name", "recipe": "name"}
# what a placeholder renders when neither the grid nor the variant sets it: the schema's defaults
_DEFAULT_LABEL = {"vision": VisionConfig().family, "llm": LLMConfig().family, "connector": ConnectorConfig().name,
                  "data": DataConfig().name, "recipe": "base", "seed": "0"}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Variant:
    name: str                    # readable, unique within the grid
    axes: dict[str, str]         # axis name → value label (MLflow's axis.* tags)
    config: VariantConfig        # fully resolved; config.name == name
    # field path → where it was written ("file:line", "--set ..."): for errors found after loading
    where: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Grid:
    name: str
    source: str                  # the grid (or variant) file path
    axes: dict[str, list[str]]   # axis → labels in YAML order
    variants: list[Variant]


@dataclass(frozen=True)
class _Value:
    label: str
    change: dict                 # merged into the raw variant mapping
    where: dict[str, str]        # raw field path → grid file:line, so errors point at the axis value


def load_grid(path) -> Grid:
    """Expand a grid YAML into resolved variants; every problem is reported in one ConfigError."""
    path = Path(path)
    source = str(path)
    data, gwhere = read_yaml(path)
    problems = [(k, f"unknown grid field{did_you_mean(k, _GRID_KEYS)}; allowed: {', '.join(sorted(_GRID_KEYS))}")
                for k in sorted(set(data) - _GRID_KEYS, key=str)]
    name = data.get("name") or path.stem
    if not isinstance(name, str) or name_problem(name):
        # the sweep's name becomes report and Ray experiment directories, and MLflow tags
        problems.append(("name", f"the sweep name {name_problem(str(name)) or 'must be a string'}"))
    raw, where = _base(data, path, gwhere, problems)
    axes = _axes(data.get("axes"), gwhere, problems)
    labels = {axis: [v.label for v in values] for axis, values in axes.items()}
    include = _rules("include", data.get("include"), labels, problems)
    exclude = _rules("exclude", data.get("exclude"), labels, problems)
    naming = data.get("naming", DEFAULT_NAMING)
    if not isinstance(naming, str):
        problems.append(("naming", "must be a string pattern such as " + DEFAULT_NAMING))
    for ph in _PLACEHOLDER.findall(naming) if isinstance(naming, str) else []:
        if ph not in axes and ph not in _DEFAULT_LABEL:
            problems.append(("naming", f"{{{ph}}} is neither an axis nor one of {', '.join(_DEFAULT_LABEL)}"))
    # structural problems first: with a broken axis or rule the expansion would only add noise
    if problems:
        raise ConfigError(problems, source, gwhere)

    combos = [dict(zip(axes, pick)) for pick in itertools.product(*axes.values())]
    if include:
        combos = [c for c in combos if any(_matches(c, r) for r in include)]
        if not combos:
            raise ConfigError([("include", "no combination matches any rule")], source, gwhere)
    combos = [c for c in combos if not any(_matches(c, r) for r in exclude)]
    if not combos:
        raise ConfigError([("exclude", "every combination is excluded")], source, gwhere)

    merged = []  # (raw, where, the where-entries of the axis values alone)
    for combo in combos:
        vraw, varied = dict(raw), {}
        for value in combo.values():
            vraw = deep_merge(vraw, value.change)
            varied.update(value.where)
        merged.append((vraw, {**where, **varied}, varied))
    picked = [{axis: v.label for axis, v in combo.items()} for combo in combos]
    names = _unique([_render(naming, p, m[0]) for p, m in zip(picked, merged)], picked, list(axes))
    _check_names(names, source, gwhere)

    variants, found = [], []
    for vname, labels_, (vraw, vwhere, varied) in zip(names, picked, merged):
        vraw["name"] = vname
        try:
            variants.append(Variant(vname, labels_, resolve(vraw, source, vwhere), vwhere))
        except ConfigError as err:
            for field_, msg in err.problems:
                # a whole-block error (e.g. `training`) that only some variants hit is most likely
                # caused by what they vary: point at that axis value rather than the base's block
                below = [loc for k, loc in varied.items() if k.startswith(field_ + ".")]
                found.append((vname, field_, msg, varied.get(field_) or (below[0] if below else err._locate(field_))))
    if found:
        raise variants_error(found, source)
    return Grid(name, source, labels, variants)


def variants_error(found: list[tuple[str, str, str, str]], source: str) -> ConfigError:
    """(variant, field, message, file:line) problems as one error; a problem several variants share
    (the same field, message and line) is one line naming them: "[a, b] field: message"."""
    names_of: dict[tuple[str, str, str], list[str]] = {}
    for variant, field_, msg, loc in found:
        names_of.setdefault((field_, msg, loc), []).append(variant)
    problems, located = [], {}
    for (field_, msg, loc), names in names_of.items():
        shown = ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:2])} and {len(names) - 2} more"
        key = f"[{shown}] {field_}"
        problems.append((key, msg))
        located[key] = loc
    return ConfigError(problems, source, located)


def single_variant_grid(path) -> Grid:
    """A plain variant YAML as a grid of one, so `vlmsweep run` has one path for both."""
    cfg, where = load_located(path)
    return Grid(cfg.name, str(path), {}, [Variant(cfg.name, {}, cfg, where)])


def load_any(path) -> Grid:
    """A grid file (it has `axes:`) or a single variant file."""
    data, _ = read_yaml(path)
    return load_grid(path) if "axes" in data else single_variant_grid(path)


def select(grid: Grid, name: str) -> Grid:
    """The grid with just the variant called `name` (`--variant NAME`)."""
    for v in grid.variants:
        if v.name == name:
            return replace(grid, variants=[v])
    names = [v.name for v in grid.variants]
    raise ConfigError([("variant", f"no variant {name!r} in grid {grid.name!r}{did_you_mean(name, names)}; "
                                   f"variants: {', '.join(names)}")], source=grid.source)


def with_sets(grid: Grid, sets: list) -> Grid:
    """Every variant with --set changes (load.parse_sets) on top of its resolved config."""
    variants = []
    for v in grid.variants:
        raw, where = apply_sets(v.config.model_dump(mode="json"), v.where, sets, grid.source)
        variants.append(replace(v, config=resolve(raw, grid.source, where), where=where))
    return replace(grid, variants=variants)


def _base(data: dict, path: Path, gwhere: dict, problems: list) -> tuple[dict, dict]:
    """The raw mapping every variant starts from, and where each of its fields was written."""
    raw, where = {}, {}
    try:
        base_path = base_file(data.get("base"), path, gwhere)
    except ConfigError as err:
        problems.extend(err.problems)
        base_path = None
    if base_path is not None:
        raw, where = load_raw(base_path)  # keeps the base file's own file:line
    inline = data.get("variant")
    if inline is not None:
        if not isinstance(inline, dict):
            problems.append(("variant", "must be a mapping of variant fields"))
        else:
            raw = deep_merge(raw, inline)
            where.update({k.removeprefix("variant."): v for k, v in gwhere.items() if k.startswith("variant.")})
    return raw, where


def _axes(axes, gwhere: dict, problems: list) -> dict[str, list[_Value]]:
    if not isinstance(axes, dict):
        problems.append(("axes", "must be a mapping of axis name → list of values"))
        return {}
    out = {}
    for axis, values in axes.items():
        axis = str(axis)
        if axis in ("name", "base"):
            problems.append((f"axes.{axis}", "cannot be an axis (variant names come from `naming`)"))
        elif not isinstance(values, list):
            problems.append((f"axes.{axis}", "must be a list of values"))
        elif not values:
            problems.append((f"axes.{axis}", "empty list"))
        else:
            out[axis] = _axis_values(axis, values, gwhere, problems)
    return out


def _axis_values(axis: str, values: list, gwhere: dict, problems: list) -> list[_Value]:
    out, seen = [], {}
    for i, value in enumerate(values):
        at = f"axes.{axis}.{i}"
        path = list(_SHORTHAND.get(axis, axis.split(".")))
        given = None
        if isinstance(value, dict) and set(value) == {"label", "value"}:
            given, value = value["label"], value["value"]   # a label for a value that can't carry one
        if isinstance(value, dict):
            value = dict(value)
            label = value.pop("label", None)
            if label is None:  # {label: L, value: {...}} names a mapping too
                label = given if given is not None else value.get(_NAME_FIELD.get(axis))  # None for dotted paths
            if label is None:
                problems.append((at, "a mapping value needs a `label` (it names the variant)"))
                continue
        elif isinstance(value, list):
            # fused encoders, [{label: DINOv2, family: dinov2, ...}, {family: siglip, ...}], are
            # "DINOv2+siglip": each item by its label or naming field, labels removed from the items
            value = [dict(v) for v in value] if all(isinstance(v, dict) for v in value) else value
            label = "+".join(str(v.pop("label", None) or v.get(_NAME_FIELD.get(axis), v)) if isinstance(v, dict)
                             else str(v) for v in value)
        else:
            label = value
            if axis in _NAME_FIELD and axis != "recipe":  # recipe: a plain name is the whole value
                path.append(_NAME_FIELD[axis])
        label = str(given if given is not None else label)
        if label in seen:
            problems.append((at, f"duplicate label {label!r} (also axes.{axis}.{seen[label]})"))
            continue
        seen[label] = i
        change = value
        stage_changes = None
        if axis == "recipe" and isinstance(value, dict) and isinstance(value.get("stages"), dict):
            # {name: share, stages: {share_pretrain: {...}}}: the named recipe, with changes to some of
            # its stages for this value only (a list under `stages` spells out a whole recipe instead)
            stage_changes = value.pop("stages")
            change = value["name"] if set(value) == {"name"} else value
        for key in reversed(path):
            change = {key: change}
        if stage_changes is not None:
            change["stages"] = stage_changes
        target = ".".join(path)
        src = f"{at}.value" if given is not None else at   # where the value itself was written
        where = {f"{target}.{k[len(src) + 1:]}": loc for k, loc in gwhere.items()
                 if k.startswith(src + ".") and k[len(src) + 1:].split(".")[0] != "label"}
        if at in gwhere:
            where[target] = gwhere[at]
        out.append(_Value(label, change, where))
    return out


def _rules(kind: str, rules, labels: dict[str, list[str]], problems: list) -> list[dict[str, set[str]]]:
    """include/exclude rules as {axis: allowed labels}; a rule's value is a label or a list of them."""
    if rules is None:
        return []
    if not isinstance(rules, list):
        problems.append((kind, "must be a list of {axis: label} rules"))
        return []
    out = []
    for i, rule in enumerate(rules):
        at = f"{kind}.{i}"
        if not isinstance(rule, dict) or not rule:
            problems.append((at, "must be a non-empty mapping of axis: label"))
            continue
        parsed = {}
        for axis, want in rule.items():
            wants = {str(w) for w in (want if isinstance(want, list) else [want])}
            if axis not in labels:
                problems.append((f"{at}.{axis}", f"unknown axis; axes: {', '.join(labels)}"))
                continue
            for bad in sorted(wants - set(labels[axis])):
                problems.append((f"{at}.{axis}", f"unknown label {bad!r}; labels: {', '.join(labels[axis])}"))
            parsed[axis] = wants
        out.append(parsed)
    return out


def _matches(combo: dict[str, _Value], rule: dict[str, set[str]]) -> bool:
    return all(combo[axis].label in wants for axis, wants in rule.items())


def _render(pattern: str, labels: dict[str, str], raw: dict) -> str:
    return _PLACEHOLDER.sub(lambda m: labels[m[1]] if m[1] in labels else _derived(raw, m[1]), pattern)


def _derived(raw: dict, key: str) -> str:
    """A shorthand placeholder the grid doesn't vary: what the variant's merged raw config says."""
    node = raw
    for part in _SHORTHAND[key]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node = node.get(_NAME_FIELD.get(key))
    elif isinstance(node, list):   # fused encoders: their families joined
        node = "+".join(str(v.get(_NAME_FIELD.get(key), VisionConfig().family) if isinstance(v, dict) else v)
                        for v in node)
    return _DEFAULT_LABEL[key] if node is None else str(node)


def _unique(names: list[str], picked: list[dict[str, str]], axes: list[str]) -> list[str]:
    """Disambiguate equal names by appending the axes that differ among them (see module doc)."""
    groups = defaultdict(list)
    for i, name in enumerate(names):
        groups[name].append(i)
    out = list(names)
    for name, idx in groups.items():
        if len(idx) < 2:
            continue
        differing = [a for a in axes if len({picked[i][a] for i in idx}) > 1]
        for i in idx:
            out[i] = name + "".join(f"-{a}{picked[i][a]}" if a == "seed" else f"-{picked[i][a]}"
                                    for a in differing)
    return out


def _check_names(names: list[str], source: str, gwhere: dict) -> None:
    # names become MLflow run names, CLI arguments (--variant), log prefixes and directory names
    bad = {n: name_problem(n) or f"{n!r} contains whitespace" for n in dict.fromkeys(names)
           if name_problem(n) or re.search(r"\s", n)}
    problems = [("naming", f"variant name {why}; change the labels or the pattern") for why in bad.values()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:  # only when a suffixed name meets another variant's plain one
        problems.append(("naming", f"variant names not unique: {', '.join(dupes)}; put more axes in the pattern"))
    if problems:
        raise ConfigError(problems, source, gwhere)
