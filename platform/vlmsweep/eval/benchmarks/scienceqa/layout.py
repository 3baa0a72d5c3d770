"""ScienceQA's files: LLaVA's llava_test_CQM-A.json, ScienceQA's problems.json + pid_splits.json."""

from __future__ import annotations

from pathlib import Path

from ..base import OPTION_LETTER, Item
from ..files import foreign, pick, problem, read_json, require_list, require_mapping

QUESTIONS = "llava_test_CQM-A.json"
IMAGES = "images/test"
SPLIT = "test"


def load_items(folder: Path) -> list[Item]:
    path = pick(folder, "scienceqa", (QUESTIONS,), "question file")
    items = []
    for r in require_list(read_json(path), path, "scienceqa", ("id", "conversations")):
        turns = r["conversations"]
        if not isinstance(turns, list) or not turns or not isinstance(turns[0], dict) or "value" not in turns[0]:
            raise problem(path, f"record {r['id']!r}: expected conversations[0].value, the question")
        # as model_vqa_science.py: the <image> marker out, the single-prediction prompt in
        text = f"{turns[0]['value'].replace('<image>', '').strip()}\n{OPTION_LETTER}"
        items.append(Item(str(r["id"]), [f"{IMAGES}/{r['image']}"] if r.get("image") else [], text))
    return items


def load_key(path: Path) -> dict:
    """{problem id: problem} for the ids of pid_splits.json's "test" list, in that order."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    problems_file = pick(path, "scienceqa", ("problems.json",), "problems")
    problems = require_mapping(read_json(problems_file), problems_file, "scienceqa", ("choices", "answer"))
    splits_file = pick(folder, "scienceqa", ("pid_splits.json",), "splits")
    splits = read_json(splits_file)
    test = splits.get(SPLIT) if isinstance(splits, dict) else None
    if not isinstance(test, list):
        raise foreign(splits_file, "scienceqa", f'expected pid_splits.json\'s {{"{SPLIT}": [ids]}}')
    unknown = [pid for pid in test if pid not in problems]
    if unknown:
        raise problem(splits_file, f"{len(unknown)} {SPLIT} ids are not in {problems_file.name}, e.g. {unknown[:3]}")
    return {pid: problems[pid] for pid in test}
