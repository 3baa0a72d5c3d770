"""Reading a benchmark's release files, with errors that name the file (and line).

Every problem with a benchmark file — missing, not JSON, not this benchmark's format — is a
BenchmarkFileError: an InputError (so a ConfigError), which the CLI prints as one line and
exits 2 with, instead of a KeyError deep inside a scorer.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlmsweep.config.errors import InputError


class BenchmarkFileError(InputError):
    """A benchmark file (questions, answer key, answers) that is missing or malformed."""


AnnotationError = BenchmarkFileError  # the name the first scorers used


def problem(where, message: str) -> BenchmarkFileError:
    return BenchmarkFileError([(str(where), message)])


def read_text(path: Path) -> str:
    path = Path(path)
    if path.is_dir():
        raise problem(path, "is a directory; give the file")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise problem(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise problem(path, f"cannot read it as text ({err})") from None


def read_json(path: Path):
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise problem(f"{path}:{err.lineno}", f"not valid JSON ({err.msg}, column {err.colno})") from None


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a line that is not a JSON object is an error naming it."""
    rows = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise problem(f"{path}:{n}", f"not a JSON line ({err.msg})") from None
            if not isinstance(row, dict):
                raise problem(f"{path}:{n}", f"expected a JSON object per line, got {json_kind(row)}")
            rows.append(row)
    return rows


def json_kind(value) -> str:
    """The JSON name of a parsed value's type, for messages."""
    names = {dict: "an object", list: "an array", str: "a string", type(None): "null", bool: "a boolean"}
    return names.get(type(value), "a number")


def foreign(path, bench: str, detail: str) -> BenchmarkFileError:
    return problem(path, f"not {bench} annotations: {detail} (another benchmark's file?)")


def require_list(rows, path, bench: str, keys: tuple[str, ...]) -> list[dict]:
    """`rows` when it is a list of records that each hold `keys`."""
    if not isinstance(rows, list):
        raise foreign(path, bench, f"expected an array of records, got {json_kind(rows)}")
    for i, r in enumerate(rows):
        missing = [k for k in keys if not isinstance(r, dict) or k not in r]
        if missing:
            raise foreign(path, bench, f"record {i} has no {', '.join(map(repr, missing))}")
    return rows


def require_mapping(records, path, bench: str, keys: tuple[str, ...]) -> dict:
    """`records` when it maps ids to records that each hold `keys`."""
    if not isinstance(records, dict) or not records:
        raise foreign(path, bench, f"expected an object of id → record, got {json_kind(records)}")
    for qid, r in records.items():
        missing = [k for k in keys if not isinstance(r, dict) or k not in r]
        if missing:
            raise foreign(path, bench, f"record {qid!r} has no {', '.join(map(repr, missing))}")
    return records


def pick(path: Path, bench: str, candidates: tuple[str, ...], what: str) -> Path:
    """`path` itself when it is a file, else the first of `candidates` inside the folder `path`;
    a folder holding none of them is one error naming the folder and the files expected."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise problem(path, "no such file or directory")
    for name in candidates:
        if (path / name).exists():
            return path / name
    raise problem(path, f"no {bench} {what} here: expected {' or '.join(candidates)}")


def first_dir(folder: Path, candidates: tuple[str, ...]) -> Path:
    """The first existing subfolder of `candidates` (images folders move between LLaVA's and
    TinyLLaVA Factory's layouts); the first candidate when none exists, so a missing image is
    reported per item by the generator."""
    for name in candidates:
        if (folder / name).is_dir():
            return folder / name
    return folder / candidates[0]
