"""What a benchmark folder provides, and the bookkeeping every scorer shares.

A benchmark (one folder under eval/benchmarks/, one line in the registry) has:
  - its spec: name, headline metrics, the response-format prompt, whether it needs a judge,
    and the names its folder has under an eval data dir (LLaVA's playground/data/eval names);
  - readers for its official layouts: the questions a model answers (`load_items`) and the
    answer key (`load_key`);
  - its scoring rule (`score`), fed answers in LLaVA's answers-file form, whether they come
    from a LLaVA answers file or from vlmsweep's own generation, so both score the same way;
  - its synthetic builder for the world (`build_world`), which writes the official layout.

Answers find their question through `answer_key`, a benchmark's own rule (LLaVA keys TextVQA
by image id + question text, MME by image file + question): the same rule serves a LLaVA
file and vlmsweep's generation. Two answers for one question are an error, never last-wins.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from .files import BenchmarkFileError, problem

# LLaVA-1.5's response-format prompts (docs/Evaluation.md; its eval question files carry them)
SINGLE_WORD = "Answer the question using a single word or phrase."
OPTION_LETTER = "Answer with the option's letter from the given choices directly."


@dataclass(frozen=True)
class Item:
    """One question to generate an answer for."""
    question_id: str | int   # as the benchmark's question file writes it (LLaVA answer files repeat it)
    images: list             # per image: a path relative to the benchmark folder, or the image's bytes
    prompt: str              # the full user text, response-format prompt included
    extra: dict = field(default_factory=dict)  # what scoring or reports may want (category, ...)


@dataclass(frozen=True)
class Answer:
    """One line of a LLaVA answers file: what scoring reads."""
    question_id: object
    text: str
    prompt: str | None = None   # LLaVA writes the question text it asked; some rules read it
    where: str = ""              # "file:line" for messages

    @staticmethod
    def of(item: Item, text: str, prompt: str | None = None) -> Answer:
        return Answer(item.question_id, text, item.prompt if prompt is None else prompt, "generated")


class Benchmark:
    name: str = ""
    folders: tuple[str, ...] = ()   # its folder's names under --data, LLaVA's first
    metrics: tuple[str, ...] = ()   # headline metrics; the first is the one tables show
    prompt: str = ""                # the response-format prompt LLaVA-1.5 appends ("" for none)
    needs_judge: bool = False
    in_world: bool = True           # the synthetic world builds a set for it
    released: bool = True           # a real release ships its layout (False: vlmsweep's own, world only)
    layout: str = ""                # the files `load_items` reads, for messages and docs

    def folder(self, data_dir: str | Path) -> Path:
        """This benchmark's folder under `data_dir` (LLaVA's playground/data/eval, or vlmsweep's
        world sets), or `data_dir` itself when it is that folder."""
        data_dir = Path(data_dir)
        for name in self.folders:
            if (data_dir / name).is_dir():
                return data_dir / name
        if self.holds_layout(data_dir):
            return data_dir
        raise problem(data_dir, f"no folder for {self.name} (expected {' or '.join(f + '/' for f in self.folders)} "
                                f"holding {self.layout})")

    def holds_layout(self, folder: Path) -> bool:
        return False

    # The defaults below are the benchmark folder's own modules (layout.py, score.py, world.py
    # next to its __init__.py): a spec overrides only what its benchmark does differently.
    def _part(self, name: str):
        return importlib.import_module(f"{type(self).__module__}.{name}")

    def load_items(self, folder: Path) -> list[Item]:
        return self._part("layout").load_items(folder)

    def load_key(self, path: Path, questions: Path | None = None):
        """The answer key from the official file(s): `path` is the file or the benchmark folder;
        `questions` a question file, for benchmarks whose key needs one (POPE's splits)."""
        return self._part("layout").load_key(path)

    def folder_key(self, folder: Path):
        """The answer key of a benchmark folder being evaluated; None where the layout ships no
        answers (VQAv2 test-dev): then nothing is scored, the submission file is the result."""
        return self.load_key(folder)

    def answer_key(self, answer: Answer):
        return str(answer.question_id)

    def answer_prompt(self, item: Item) -> str:
        """The "prompt" LLaVA's generator writes into an answers file for this item."""
        return item.prompt

    def score(self, answers: list[Answer], key, judge=None) -> dict:
        return self._part("score").score(self, answers, key)

    def write_outputs(self, answers: list[Answer], key, folder: Path | None, out_dir: Path,
                      scored: dict | None = None) -> list[str]:
        """Files in the benchmark's own submission / eval-tool format, under out_dir; their names."""
        return []

    def build_world(self, root: Path, seed: int, scale: int, image_size: int) -> dict:
        if not self.in_world:
            raise NotImplementedError(f"the world builds no {self.name} set")
        return self._part("world").build(root, seed, scale, image_size)


# ---- pairing answers with the key, and the result every scorer returns ----------------------

@dataclass
class Paired:
    matched: dict       # key -> Answer, for keys in the answer key, in answers-file order
    unknown: list       # answers whose key is not in the answer key
    missing: list       # keys of the answer key with no answer


def pair(bench: Benchmark, answers: list[Answer], known, keys=None) -> Paired:
    """Answers matched to the answer key by the benchmark's answer_key rule. Two answers for one
    question are an error naming both lines; answers that match nothing at all mean the file
    is another benchmark's (or another split's): an error too."""
    seen: dict = {}
    for a in answers:
        k = bench.answer_key(a) if keys is None else keys(a)
        if k in seen:
            raise problem(a.where or "answers", f"a second answer for {bench.name} question {_show(k)} "
                                                f"(the first is at {seen[k].where or 'an earlier line'})")
        seen[k] = a
    matched = {k: a for k, a in seen.items() if k in known}
    if answers and not matched:
        first = answers[0]
        raise problem(first.where or "answers", f"none of the {len(answers)} answers matches a {bench.name} "
                      f"question (first: {_show(bench.answer_key(first) if keys is None else keys(first))}); "
                      "answers for another benchmark or split?")
    return Paired(matched, [a for k, a in seen.items() if k not in known], [k for k in known if k not in seen])


def _show(key) -> str:
    return " / ".join(map(repr, key)) if isinstance(key, tuple) else repr(key)


def row(question_id, prediction, parsed, answer, correct) -> dict:
    return {"question_id": question_id, "prediction": prediction, "parsed": parsed,
            "answer": answer, "correct": correct}


def pct(values) -> float:
    """Mean of 0/1 (or 0..1) values as a percentage; 0.0 for none."""
    values = [float(v) for v in values]
    return 100.0 * sum(values) / len(values) if values else 0.0


def result(metrics: dict, items: list[dict], paired: Paired, questions: int, notes=(),
           missing_rule: str = "scored as wrong", **counts) -> dict:
    """The scored result: metrics, one row per scored question, counts and notes. `missing_rule`
    says what the official script does with a question that has no answer."""
    notes = list(notes)
    c = {"questions": questions, "answered": len(paired.matched), "missing": len(paired.missing),
         "unknown": len(paired.unknown),
         "empty": sum(not a.text.strip() for a in paired.matched.values()), **counts}
    if paired.missing:
        notes.append(f"{len(paired.missing)} of {questions} questions have no answer; {missing_rule}")
    if paired.unknown:
        notes.append(f"{len(paired.unknown)} answers match no question in the answer key; ignored")
    return {"metrics": metrics, "items": items, "counts": c, "notes": notes, "skipped": False}


__all__ = ["OPTION_LETTER", "SINGLE_WORD", "Answer", "Benchmark", "BenchmarkFileError", "Item", "Paired",
           "pair", "pct", "result", "row"]
