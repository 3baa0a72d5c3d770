"""Answer files: LLaVA's, the files its converters write, and vlmsweep's own.

Read, in the order they are recognised:
  - vlmsweep's results JSON (`<bench>.json`: its "answers", or else its scored "items");
  - a JSON object of question id → answer text (LLaVA's convert_mmvet_for_eval.py output,
    TinyLLaVA Factory's convert_answer_to_mmmu.py output);
  - LLaVA's answers JSONL (model_vqa*.py: question_id, prompt, text, answer_id, model_id,
    metadata), which vlmsweep's own generation writes too (answers/<bench>.jsonl).
Each answer keeps its "file:line", so a duplicate or a malformed line is named.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Answer
from .files import problem, read_jsonl, read_text


def read_answers(path: str | Path) -> list[Answer]:
    path = Path(path)
    text = read_text(path)
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and isinstance(whole.get("answers"), list):
        return _results_items(path, whole["answers"], "answers", "text")
    if isinstance(whole, dict) and isinstance(whole.get("items"), list):
        return _results_items(path, whole["items"], "items", "prediction")
    if isinstance(whole, dict) and "question_id" not in whole and whole \
            and all(isinstance(v, str) for v in whole.values()):
        return [Answer(k, v, None, f"{path}:{k}") for k, v in whole.items()]
    answers = []
    for n, row in enumerate(read_jsonl(path), 1):
        if "question_id" not in row or not isinstance(row.get("text"), str):
            raise problem(f"{path}:{n}", "not a LLaVA answer line: expected question_id and text "
                                         f"(got {', '.join(map(str, list(row)[:5])) or 'nothing'})")
        prompt = row.get("prompt")
        answers.append(Answer(row["question_id"], row["text"], prompt if isinstance(prompt, str) else None,
                              f"{path}:{n}"))
    return answers


def _results_items(path: Path, rows: list, field: str, text: str) -> list[Answer]:
    out = []
    for i, it in enumerate(rows):
        if not isinstance(it, dict) or "question_id" not in it or text not in it:
            raise problem(f"{path}:{field}[{i}]", f"expected question_id and {text} (a vlmsweep results file)")
        if it[text] is not None:  # a question the run had no answer for
            out.append(Answer(it["question_id"], str(it[text]), it.get("prompt"), f"{path}:{field}[{i}]"))
    return out


def write_answers(path: Path, answers: list[Answer], model_id: str = "vlmsweep") -> None:
    """LLaVA's answers-file format, one line per answer, so LLaVA's own converters and
    `vlmsweep eval score` read it back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for n, a in enumerate(answers):
            f.write(json.dumps({"question_id": a.question_id, "prompt": a.prompt, "text": a.text,
                                "answer_id": f"{model_id}-{n}", "model_id": model_id, "metadata": {}}) + "\n")
