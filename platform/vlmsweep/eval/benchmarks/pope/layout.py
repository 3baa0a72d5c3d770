"""POPE's files: LLaVA's question file (the splits) and POPE's label files (the answers)."""

from __future__ import annotations

from pathlib import Path

from ..base import SINGLE_WORD, Item
from ..files import first_dir, pick, problem, read_jsonl, require_list

QUESTIONS = "llava_pope_test.jsonl"
LABELS = "coco"
PREFIX = "coco_pope_"   # coco_pope_<split>.json
SPLITS = ("random", "popular", "adversarial")
IMAGES = ("val2014",)


def _bare(text: str) -> str:
    return text.replace(SINGLE_WORD, "").strip()


def load_items(folder: Path) -> list[Item]:
    path = pick(folder, "pope", (QUESTIONS,), "question file")
    images = first_dir(path.parent, IMAGES).relative_to(path.parent)
    return [Item(r["question_id"], [str(images / r["image"])],
                 r["text"] if r["text"].rstrip().endswith(SINGLE_WORD) else f"{r['text']}\n{SINGLE_WORD}",
                 {"category": r["category"]})
            for r in _questions(path)]


def _questions(path: Path) -> list[dict]:
    rows = require_list(read_jsonl(path), path, "pope", ("question_id", "category"))
    seen = set()
    for r in rows:
        if str(r["question_id"]) in seen:
            raise problem(path, f"question_id {r['question_id']!r} appears twice (eval_pope.py keys by it)")
        seen.add(str(r["question_id"]))
    return rows


def _locate(path: Path, questions: Path | None) -> tuple[list[Path], Path | None]:
    """(label files, question file) from whichever of them the user pointed at."""
    path = Path(path)
    if path.is_dir():
        labels_dir = path / LABELS if (path / LABELS).is_dir() else path
        files = sorted(labels_dir.glob(f"{PREFIX}*.json"))
        if not files:
            raise problem(path, f"no POPE label files here: expected {LABELS}/{PREFIX}<split>.json")
        near = [labels_dir / QUESTIONS, labels_dir.parent / QUESTIONS]
    elif path.name == QUESTIONS:  # the question file given where the labels go: labels sit beside it
        return _locate(path.parent, questions or path)
    else:
        pick(path, "pope", (), "label file")  # exists, and is a file
        files, near = [path], [path.parent / QUESTIONS, path.parent.parent / QUESTIONS]
    return files, questions or next((q for q in near if q.is_file()), None)


def load_key(path: Path, questions: Path | None = None) -> dict:
    """{question id (str): {"label", "split"}}, in the question file's order."""
    files, qfile = _locate(path, questions)
    labels: dict[str, list[tuple[Path, int, dict]]] = {}
    for file in files:
        for n, r in enumerate(require_list(read_jsonl(file), file, "pope", ("label",)), 1):
            if r["label"] not in ("yes", "no"):
                raise problem(f"{file}:{n}", f"label must be yes or no, got {r['label']!r}")
            split = file.stem[len(PREFIX):] if file.stem.startswith(PREFIX) else r.get("category")
            if not split:
                raise problem(f"{file}:{n}", f"no split: name the file {PREFIX}<split>.json or give each line "
                                             "a category")
            labels.setdefault(split, []).append((file, n, r))
    if qfile is None:
        raise problem(files[0], f"POPE needs LLaVA's question file {QUESTIONS} for each question's split: "
                                "pass --questions FILE or keep it beside the coco/ folder")
    by_split: dict[str, list[dict]] = {}
    for q in _questions(qfile):
        by_split.setdefault(q["category"], []).append(q)
    key = {}
    for split, rows in labels.items():
        asked = by_split.get(split, [])
        if len(asked) != len(rows):
            raise problem(rows[0][0], f"{len(rows)} {split} labels but {qfile.name} has {len(asked)} {split} "
                                      "questions; eval_pope.py pairs them line by line")
        for q, (file, n, r) in zip(asked, rows):
            for field in ("text", "image"):
                if field in r and field in q and _bare(str(r[field])) != _bare(str(q[field])):
                    raise problem(f"{file}:{n}", f"{field} {r[field]!r} is not question {q['question_id']!r}'s "
                                                 f"{_bare(str(q[field]))!r} in {qfile.name}: files of another set?")
            key[str(q["question_id"])] = {"label": r["label"], "split": split}
    return key
