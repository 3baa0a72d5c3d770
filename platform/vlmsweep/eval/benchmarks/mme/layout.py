"""MME's release folder and LLaVA's llava_mme.jsonl.

MME repeats an image's path as the question_id of both its questions, so an answer's
question is (subtask, the image's .txt name, the question text), as LLaVA's
convert_answer_to_mme.py keys its ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..base import SINGLE_WORD, Answer, Item
from ..files import problem, read_jsonl, read_text, require_list

RELEASE = "MME_Benchmark_release_version"
QUESTIONS = "llava_mme.jsonl"
YES_NO = "Please answer yes or no."
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")


@dataclass
class MMEKey:
    truth: dict = field(default_factory=dict)   # (subtask, txt name, question) -> "Yes" | "No"
    image: dict = field(default_factory=dict)   # (subtask, txt name) -> the image's path in the release
    source: str = ""

    def __contains__(self, k) -> bool:
        return k in self.truth

    def __iter__(self):
        return iter(self.truth)

    def __len__(self) -> int:
        return len(self.truth)


def release_dir(path: Path) -> Path:
    path = Path(path)
    if (path / RELEASE).is_dir():
        return path / RELEASE
    if path.is_dir() and any(d.is_dir() and (any(d.glob("*.txt")) or (d / "questions_answers_YN").is_dir())
                             for d in path.iterdir()):
        return path
    raise problem(path, f"not mme annotations: expected MME's {RELEASE} folder (subtask folders of "
                        "question .txt files and images)")


def load_key(path: Path) -> MMEKey:
    release = release_dir(path)
    key = MMEKey(source=str(release))
    for sub in sorted(d for d in release.iterdir() if d.is_dir()):
        images, qa = (sub / "images", sub / "questions_answers_YN") if (sub / "images").exists() else (sub, sub)
        stems = {p.stem: p for p in images.iterdir() if p.suffix in IMAGE_SUFFIXES} if images.is_dir() else {}
        for txt in sorted(qa.glob("*.txt")):
            if txt.stem not in stems:
                raise problem(txt, f"no image {txt.stem}.jpg/.png beside it in {images}")
            key.image[(sub.name, txt.name)] = stems[txt.stem].relative_to(release).as_posix()
            for n, line in enumerate(read_text(txt).splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.strip().split("\t")
                if len(parts) != 2 or parts[1].strip().lower() not in ("yes", "no"):
                    raise problem(f"{txt}:{n}", "expected 'question<TAB>Yes' or 'question<TAB>No'")
                key.truth[(sub.name, txt.name, parts[0])] = parts[1]
    if not key.truth:
        raise problem(release, "no MME question files (<subtask>/<image>.txt) in it")
    return key


def answer_key(answer: Answer, key: MMEKey):
    """convert_answer_to_mme.py's lookup: the single-word prompt out, MME's own "Please answer
    yes or no." in (with the double space some release files have, when that is the one there)."""
    if answer.prompt is None:
        raise problem(answer.where or "answers", "mme answers need LLaVA's prompt field: the question "
                                                 "is found by its text")
    qid = str(answer.question_id)
    sub, txt = qid.split("/")[0], qid.split("/")[-1].split(".")[0] + ".txt"
    prompt = answer.prompt
    if SINGLE_WORD in prompt:
        prompt = prompt.replace(SINGLE_WORD, "").strip()
    if YES_NO not in prompt:
        prompt = f"{prompt} {YES_NO}"
        if (sub, txt, prompt) not in key.truth:
            prompt = prompt.replace(f" {YES_NO}", f"  {YES_NO}")
    return sub, txt, prompt


def load_items(folder: Path) -> list[Item]:
    folder = Path(folder)
    release = release_dir(folder)
    prefix = release.relative_to(folder).as_posix() if release != folder else ""
    join = (lambda p: f"{prefix}/{p}") if prefix else (lambda p: p)
    if (folder / QUESTIONS).is_file():
        rows = require_list(read_jsonl(folder / QUESTIONS), folder / QUESTIONS, "mme",
                            ("question_id", "image", "text"))
        return [Item(r["question_id"], [join(r["image"])], r["text"], {"category": r.get("category")})
                for r in rows]
    key = load_key(release)
    return [Item(key.image[(sub, txt)], [join(key.image[(sub, txt)])], f"{question}\n{SINGLE_WORD}",
                 {"category": sub}) for sub, txt, question in key.truth]
