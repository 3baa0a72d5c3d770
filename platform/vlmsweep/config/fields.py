"""Where a field lives in the schema: the fields a model at some location allows, found by walking
the annotations (through lists, mappings, `X | None` and Annotated unions), for "did you mean"."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel


def fields_at(root: type[BaseModel], loc) -> list[str]:
    """The fields of the schema model at `loc` under `root` (through lists and mappings): what
    "did you mean" picks from for an unknown field there."""
    annotation: Any = root
    for part in loc:
        if isinstance(part, int):  # a list index: the list's item type follows
            lists = [m for m in _members(annotation) if typing.get_origin(m) is list]
            annotation = typing.get_args(lists[0])[0] if lists else None
            continue
        model = _model_in(annotation)
        if model is None:  # a mapping: `part` is a key, the value type follows
            args = typing.get_args(annotation)
            annotation = args[-1] if args else None
        elif part in model.model_fields:
            annotation = model.model_fields[part].annotation
        else:
            return []
    model = _model_in(annotation)
    return list(model.model_fields) if model else []


def _members(annotation) -> list:
    """The types an annotation allows: `X | Y` and Annotated[...] unwrapped."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _model_in(annotation) -> type[BaseModel] | None:
    """The pydantic model an annotation is (or holds, for `X | None`)."""
    for candidate in _members(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
