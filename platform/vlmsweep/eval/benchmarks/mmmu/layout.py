"""MMMU's validation records, from the official parquet files or the same records as JSON."""

from __future__ import annotations

import ast
from pathlib import Path

from ..base import OPTION_LETTER, SINGLE_WORD, Item
from ..files import foreign, problem, read_json, require_list

ANSWER_DICT = "answer_dict_val.json"
MAX_IMAGES = 7   # image_1 .. image_7
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def options_of(record: dict) -> list[str]:
    opts = record.get("options") or []
    if isinstance(opts, str):  # the release stores a Python list's repr
        try:
            opts = ast.literal_eval(opts)
        except (ValueError, SyntaxError):
            raise problem(record.get("id", "?"), f"options are not a list: {opts[:60]!r}") from None
    return [str(o) for o in opts]


def prompt_of(record: dict) -> str:
    """MMMU's construct_prompt with configs/llava1.5.yaml: question, a blank line, "(A) option"
    lines, a blank line, the response prompt."""
    if record.get("question_type", "multiple-choice") == "multiple-choice":
        example = "".join(f"({LETTERS[i]}) {o}\n" for i, o in enumerate(options_of(record)))
        return f"{record['question']}\n\n{example}\n\n{OPTION_LETTER}"
    return f"{record['question']}\n\n{SINGLE_WORD}"


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(set(folder.glob("*/validation-*.parquet")) | set(folder.glob("validation-*.parquet")))


def read_records(path: Path) -> tuple[list[dict], Path]:
    """The validation records and the folder image paths are relative to."""
    path = Path(path)
    files = _parquet_files(path) if path.is_dir() else [path] if path.suffix == ".parquet" else []
    if files:
        import pyarrow.parquet as pq

        rows = []
        for f in files:
            try:
                rows += pq.read_table(f).to_pylist()
            except Exception as err:  # pyarrow raises several kinds for a broken file
                raise problem(f, f"cannot read it as parquet ({err})") from None
        base = path if path.is_dir() else path.parent
        return require_list(rows, files[0], "mmmu", ("id", "question", "answer")), base
    if path.is_dir():
        jsons = sorted(p for p in path.glob("*.json") if p.name != ANSWER_DICT)
        if not jsons:
            raise problem(path, "no MMMU validation set here: expected <Subject>/validation-*.parquet or the "
                                "records as *.json")
        path = jsons[0]
    data = read_json(path)
    return require_list(data, path, "mmmu", ("id", "question", "answer")), path.parent


def _image(value, where: str):
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if value is None or isinstance(value, (bytes, str)):
        return value
    raise problem(where, f"an image must be bytes or a path, got {type(value).__name__}")


def load_items(folder: Path) -> list[Item]:
    records, base = read_records(folder)
    rel = base.relative_to(folder) if base != Path(folder) and Path(folder).is_dir() else Path()
    items = []
    for r in records:
        images = [_image(r.get(f"image_{k}"), str(r["id"])) for k in range(1, MAX_IMAGES + 1)]
        images = [im if isinstance(im, bytes) else str(rel / im) for im in images if im]
        items.append(Item(r["id"], images, prompt_of(r), {"subject": subject_of(r["id"])}))
    return items


def subject_of(question_id) -> str:
    return "_".join(str(question_id).split("_")[1:-1])   # validation_Art_Theory_3 -> Art_Theory


def load_key(path: Path) -> dict:
    """{id: {question_type, answer, options}}; options None for MMMU's answer_dict_val.json."""
    path = Path(path)
    if path.is_dir() and not _parquet_files(path) and (path / ANSWER_DICT).is_file():
        path = path / ANSWER_DICT
    if path.is_file() and path.suffix == ".json":
        data = read_json(path)
        if isinstance(data, dict):
            bad = [k for k, v in data.items() if not (isinstance(v, dict) and "ground_truth" in v)]
            if bad or not data:
                raise foreign(path, "mmmu", "expected MMMU's answer_dict_val.json ({id: {question_type, "
                                            "ground_truth}}) or a list of validation records")
            return {str(k): {"question_type": v.get("question_type", "multiple-choice"),
                             "answer": v["ground_truth"], "options": None} for k, v in data.items()}
    records, _ = read_records(path)
    return {str(r["id"]): {"question_type": r.get("question_type", "multiple-choice"), "answer": r["answer"],
                           "options": options_of(r)} for r in records}
