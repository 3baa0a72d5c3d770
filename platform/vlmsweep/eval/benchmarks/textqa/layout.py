"""Text QA's files: the question file, and the answer key with what scoring needs per question."""

from __future__ import annotations

from pathlib import Path

from ..base import Item
from ..files import pick, problem, read_json, read_jsonl, require_list, require_mapping

QUESTIONS = "textqa_questions.jsonl"
ANSWERS = "textqa_answers.json"


def load_items(folder: Path) -> list[Item]:
    path = pick(Path(folder), "textqa", (QUESTIONS,), "question file")
    return [Item(r["question_id"], [], r["text"])
            for r in require_list(read_jsonl(path), path, "textqa", ("question_id", "text"))]


def load_key(path: Path) -> dict:
    """{question id (str): {answer, domain, pick, kind}}."""
    path = pick(Path(path), "textqa", (ANSWERS,), "answer key")
    key = require_mapping(read_json(path), path, "textqa", ("answer", "domain", "pick"))
    for qid, record in key.items():
        if record["pick"] not in ("first", "last") or not isinstance(record["domain"], list) \
                or record["answer"] not in record["domain"]:
            raise problem(path, f"question {qid!r}: pick must be first or last, and the answer one of the domain")
    return {str(q): r for q, r in key.items()}
