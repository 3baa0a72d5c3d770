"""What a benchmark module provides, and the bookkeeping every scorer shares.

A benchmark turns its question file into Items (prompt = question + the response-format
prompt LLaVA-1.5's eval scripts use), reads its answer key in the benchmark's own format,
and scores {question_id: raw model text} against it. The answer key defines the
questions: a question with no prediction is wrong (counted "missing"), a prediction for
a question not in the key is ignored (counted "unknown").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vlmsweep.config.errors import InputError

# LLaVA-1.5's response-format prompts (LLaVA docs/Evaluation.md and its eval question files)
SINGLE_WORD = "Answer the question using a single word or phrase."
OPTION_LETTER = "Answer with the option's letter from the given choices directly."


@dataclass(frozen=True)
class Item:
    question_id: str | int
    images: list[str]  # relative to the bench dir's images/ folder; empty for text-only
    prompt: str        # the question with the response-format prompt appended
    extra: dict = field(default_factory=dict)  # what scoring or reports may want (category, ...)


class Benchmark(Protocol):
    name: str
    metrics: list[str]  # headline metrics, the first is the one a table shows

    def load_items(self, bench_dir: Path) -> list[Item]: ...

    def load_annotations(self, path_or_dir: Path) -> Any: ...

    def score(self, predictions: dict, annotations: Any) -> dict: ...


class AnnotationError(InputError):
    """A benchmark file that is missing, not JSON, or not in this benchmark's format: named by
    file (and line), so the CLI prints one line instead of a KeyError deep in a scorer."""


def _read_text(path: Path) -> str:
    path = Path(path)
    if path.is_dir():
        raise AnnotationError([(str(path), "is a directory; give the file")])
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnnotationError([(str(path), "no such file")]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError([(str(path), f"cannot read it as text ({err})")]) from None


def read_json(path: Path):
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise AnnotationError([(f"{path}:{err.lineno}", f"not valid JSON ({err.msg}, column {err.colno})")]) from None


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise AnnotationError([(f"{path}:{n}", f"not a JSON line ({err.msg})")]) from None
    return rows


def json_kind(value) -> str:
    """The JSON name of a parsed value's type, for messages."""
    names = {dict: "an object", list: "an array", str: "a string", type(None): "null", bool: "a boolean"}
    return names.get(type(value), "a number")


def _foreign(path: Path, bench: str, detail: str) -> AnnotationError:
    return AnnotationError([(str(path), f"not {bench} annotations: {detail} (another benchmark's file?)")])


def require_list(rows, path: Path, bench: str, keys: tuple[str, ...]) -> list[dict]:
    """`rows` when it is a list of records that each hold `keys`: what the scorer reads."""
    if not isinstance(rows, list):
        raise _foreign(path, bench, f"expected an array of records, got {json_kind(rows)}")
    for i, r in enumerate(rows):
        missing = [k for k in keys if not isinstance(r, dict) or k not in r]
        if missing:
            raise _foreign(path, bench, f"record {i} has no {', '.join(map(repr, missing))}")
    return rows


def require_mapping(records, path: Path, bench: str, keys: tuple[str, ...]) -> dict:
    """`records` when it maps ids to records that each hold `keys`."""
    if not isinstance(records, dict):
        raise _foreign(path, bench, f"expected an object of id → record, got {json_kind(records)}")
    for qid, r in records.items():
        missing = [k for k in keys if not isinstance(r, dict) or k not in r]
        if missing:
            raise _foreign(path, bench, f"record {qid!r} has no {', '.join(map(repr, missing))}")
    return records


def locate(path_or_dir: Path, filename: str) -> Path:
    """The annotation file: `filename` inside a bench dir, or the path itself."""
    path = Path(path_or_dir)
    return path / filename if path.is_dir() else path


def with_prompt(text: str, suffix: str) -> str:
    # LLaVA's own question files already carry the prompt: never append it twice
    return text if not suffix or text.rstrip().endswith(suffix) else f"{text}\n{suffix}"


def question_items(bench_dir: Path, suffix: str, extra_keys: tuple[str, ...] = ("category",),
                   text=lambda row: row["text"]) -> list[Item]:
    """Items from a LLaVA eval questions.jsonl (question_id, image?, text, ...)."""
    return [Item(question_id=row["question_id"],
                 images=[row["image"]] if row.get("image") else [],
                 prompt=with_prompt(text(row), suffix),
                 extra={k: row[k] for k in extra_keys if k in row})
            for row in read_jsonl(Path(bench_dir) / "questions.jsonl")]


def match(predictions: dict, question_ids) -> tuple[dict[str, str | None], dict]:
    """{str(question_id): prediction text, or None when missing} for the annotated questions,
    and the counts. Ids compare as strings, so predictions read back from JSON (string keys)
    still match integer question ids."""
    given = {str(k): v for k, v in predictions.items()}
    wanted = [str(q) for q in question_ids]
    found = {q: None if given.get(q) is None else str(given[q]) for q in wanted}
    counts = {"questions": len(wanted),
              "predicted": sum(v is not None for v in found.values()),
              "missing": sum(v is None for v in found.values()),
              "empty": sum(v is not None and not v.strip() for v in found.values()),
              "unknown": len(set(given) - set(wanted))}
    return found, counts


def row(question_id, prediction, parsed, answer, correct) -> dict:
    return {"question_id": question_id, "prediction": prediction, "parsed": parsed,
            "answer": answer, "correct": correct}


def pct(values) -> float:
    """Mean of 0/1 (or 0..1) values as a percentage; 0.0 for none."""
    values = [float(v) for v in values]
    return 100.0 * sum(values) / len(values) if values else 0.0


def result(metrics: dict, items: list[dict], counts: dict, notes: list[str] | None = None) -> dict:
    notes = list(notes or [])
    if not counts["questions"]:
        notes.append("no annotated questions: every metric is 0")
    if counts["missing"]:
        notes.append(f"{counts['missing']} of {counts['questions']} questions have no "
                     "prediction; scored as wrong")
    if counts["unknown"]:
        notes.append(f"{counts['unknown']} predictions for question ids not in the "
                     "annotations; ignored")
    return {"metrics": metrics, "items": items, "counts": counts, "notes": notes, "skipped": False}
