"""Errors a user can act on: each one names the field (and file and line when known)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name, allowed: Iterable) -> str:
    """" (did you mean X?)" for the nearest allowed name, or "" when none is near."""
    close = difflib.get_close_matches(str(name), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class ConfigError(ValueError):
    """One or more problems with a user's config, each naming its field.

    `problems` is a list of (field_path, message); `where` maps a field path to
    "file:line" when the config came from a YAML file, so messages point at the line.
    A problem reported twice (the same field and message) is kept once.
    """

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None,
                 where: dict[str, str] | None = None):
        self.problems = list(dict.fromkeys(problems))
        self.source = source
        self.where = where or {}
        super().__init__(self._format())

    def _locate(self, field: str) -> str:
        # the deepest known ancestor of the field carries the line number
        parts = field.split(".")
        for n in range(len(parts), 0, -1):
            loc = self.where.get(".".join(parts[:n]))
            if loc:
                return loc
        return self.source or ""

    def _format(self) -> str:
        head = f"invalid config{f' {self.source}' if self.source else ''}: {len(self.problems)} problem(s)"
        lines = [head]
        for field, msg in self.problems:
            loc = self._locate(field)
            lines.append(f"  {field}: {msg}" + (f"  [{loc}]" if loc and loc != self.source else ""))
        return "\n".join(lines)

    def with_location(self, source: str, where: dict[str, str]) -> ConfigError:
        return ConfigError(self.problems, source=source, where=where)


class InputError(ConfigError):
    """A problem with a file or an argument rather than a config's fields (an answers file, an
    output path, the tracking store): one line, "FIELD: message"."""

    def _format(self) -> str:
        return "; ".join(f"{field}: {msg}" for field, msg in self.problems)


class UnknownNameError(ConfigError):
    """A registry lookup by a name that isn't registered; suggests the nearest and lists the allowed."""

    def __init__(self, kind: str, name: str, allowed: Iterable[str], field: str | None = None):
        self.kind, self.name, self.allowed = kind, name, sorted(allowed)
        msg = f"unknown {kind} {name!r}{did_you_mean(name, self.allowed)}; allowed: {', '.join(self.allowed)}"
        super().__init__([(field or kind, msg)])


def lookup(registry: dict, kind: str, name: str, field: str | None = None):
    """Exact-name registry lookup (never substring matching): the one way every registry is read."""
    try:
        return registry[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name (a list or mapping in the YAML)
        raise UnknownNameError(kind, name, registry.keys(), field) from None
