"""VQAv2's files: LLaVA's test-dev question file, or the official val questions + annotations."""

from __future__ import annotations

from pathlib import Path

from ..base import SINGLE_WORD, Item
from ..files import first_dir, foreign, pick, problem, read_json, read_jsonl, require_list

TEST_DEV = "llava_vqav2_mscoco_test-dev2015.jsonl"
TEST_ALL = "llava_vqav2_mscoco_test2015.jsonl"   # every test question: the submission covers these
VAL_QUESTIONS = "v2_OpenEnded_mscoco_val2014_questions.json"
VAL_ANNOTATIONS = "v2_mscoco_val2014_annotations.json"
TEST_IMAGES, VAL_IMAGES = "test2015", "val2014"


def val_image(image_id: int) -> str:
    return f"{VAL_IMAGES}/COCO_val2014_{int(image_id):012d}.jpg"


def load_items(folder: Path) -> list[Item]:
    folder = Path(folder)
    if (folder / VAL_QUESTIONS).is_file() and (folder / VAL_ANNOTATIONS).is_file():
        path = folder / VAL_QUESTIONS
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
            raise foreign(path, "vqav2", 'expected VQA\'s {"questions": [...]}')
        rows = require_list(data["questions"], path, "vqav2", ("question_id", "image_id", "question"))
        return [Item(q["question_id"], [val_image(q["image_id"])], f"{q['question']}\n{SINGLE_WORD}") for q in rows]
    path = pick(folder, "vqav2", (TEST_DEV,), "question file")
    images = first_dir(path.parent, (TEST_IMAGES,)).relative_to(path.parent)
    return [Item(r["question_id"], [str(images / r["image"])], r["text"])
            for r in require_list(read_jsonl(path), path, "vqav2", ("question_id", "image", "text"))]


def load_key(path: Path) -> dict:
    """{question id (str): annotation} from v2_mscoco_val2014_annotations.json."""
    path = pick(path, "vqav2", (VAL_ANNOTATIONS,), "answer key")
    data = read_json(path)
    if not isinstance(data, dict) or "annotations" not in data:
        raise foreign(path, "vqav2", 'expected {"annotations": [...]}')
    key = {}
    for a in require_list(data["annotations"], path, "vqav2", ("question_id", "answers")):
        if not isinstance(a["answers"], list) or not all(isinstance(x, dict) and "answer" in x for x in a["answers"]):
            raise problem(path, f"question {a['question_id']!r}: answers must be records with an 'answer'")
        key[str(a["question_id"])] = a
    return key


def split_question_ids(folder: Path | None) -> list | None:
    """Every question id the EvalAI submission must cover (LLaVA's test2015 file), if shipped."""
    if folder is not None and (Path(folder) / TEST_ALL).is_file():
        return [r["question_id"] for r in require_list(read_jsonl(Path(folder) / TEST_ALL), Path(folder) / TEST_ALL,
                                                       "vqav2", ("question_id",))]
    return None
