"""MM-Vet's release files (mm-vet.json, images/) and LLaVA's llava-mm-vet.jsonl."""

from __future__ import annotations

import re
from pathlib import Path

from ..base import Answer, Item
from ..files import first_dir, pick, read_json, read_jsonl, require_list, require_mapping

META = "mm-vet.json"
QUESTIONS = "llava-mm-vet.jsonl"
_LLAVA_ID = re.compile(r"v1_(\d+)")


def answer_key(answer: Answer) -> str:
    """convert_mmvet_for_eval.py names LLaVA's integer question N "v1_N"."""
    qid = answer.question_id
    return f"v1_{qid}" if isinstance(qid, int) or str(qid).isdigit() else str(qid)


def load_items(folder: Path) -> list[Item]:
    folder = Path(folder)
    images = first_dir(folder, ("images",)).relative_to(folder)
    if (folder / QUESTIONS).is_file():
        path = folder / QUESTIONS
        rows = require_list(read_jsonl(path), path, "mmvet", ("question_id", "image", "text"))
        return [Item(r["question_id"], [str(images / r["image"])], r["text"]) for r in rows]
    data = load_key(folder)
    # LLaVA's integer ids where MM-Vet's are v1_<n>, so LLaVA's converter reads the answers file
    return [Item(int(m[1]) if (m := _LLAVA_ID.fullmatch(qid)) else qid, [str(images / q["imagename"])],
                 q["question"], {"capability": q.get("capability", [])}) for qid, q in data.items()]


def load_key(path: Path) -> dict:
    """{id: {imagename, question, answer, capability}} from mm-vet.json."""
    path = pick(path, "mmvet", (META,), "metadata")
    return require_mapping(read_json(path), path, "mmvet", ("question", "answer"))
