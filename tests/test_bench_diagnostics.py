"""The diagnostic benches behind README "Set-up" (why the demo's object questions stay at chance):
bench/question_kinds.py (a stage's accuracy on its own training items vs fresh ones) and
bench/learn_one_kind.py (train a stage on one question kind from fresh scenes, scored as it goes)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from _tiny import finished_stage

BENCH = Path(__file__).resolve().parents[1] / "bench"
LINE = re.compile(r"^step +(\d+)  accuracy (\d\.\d{3})  \(\d+ s\)$")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench():
    return _load("learn_one_kind")


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    from vlmsweep.config.workdir import WorkDir

    work = WorkDir.at(tmp_path_factory.mktemp("learn") / "work")
    return work, finished_stage("siglip", "llama", str(work.presets), work.path("stages", "finetune-x"), 0)


@pytest.mark.parametrize("extra", [[], ["--pixels", "--max-objects", "1"], ["--text-rule"], ["--describe"]])
def test_prints_the_majority_and_a_score_every_few_steps(stage, capsys, extra):
    work, out = stage
    argv = ["--stage", out, "--work-dir", str(work.local_root), "--steps", "4", "--every", "2", "--batch", "2",
            "--held-out", "60", *extra]
    assert _bench().main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    majority = float(lines[0].rsplit(": ", 1)[1])
    assert 0.3 < majority < 0.8        # "Is there ...?" is balanced: about half yes
    steps = [LINE.match(line) for line in lines[1:]]
    assert all(steps) and [int(m[1]) for m in steps] == [0, 2, 4]
    assert all(0.0 <= float(m[2]) <= 1.0 for m in steps)


def test_text_rule_learned_from_the_words_alone(stage, capsys):
    """The control: "yes" for a warm colour word is a rule on the question text, which the
    tiny LLM learns in a few hundred steps where a rule on the image takes thousands."""
    work, out = stage
    argv = ["--stage", out, "--work-dir", str(work.local_root), "--steps", "150", "--every", "150", "--batch", "16",
            "--held-out", "100", "--text-rule", "--lr", "3e-3"]
    assert _bench().main(argv) == 0
    last = LINE.match(capsys.readouterr().out.splitlines()[-1])
    assert int(last[1]) == 150 and float(last[2]) >= 0.9


@pytest.mark.parametrize("argv, expected", [
    (["--stage", "/nonexistent"], "not a finished stage"),
    (["--stage", "/nonexistent", "--kind", "background", "--text-rule"], "--text-rule: background questions name no colour"),
    (["--stage", "/nonexistent", "--describe", "--pixels"], "--describe and --pixels"),
])
def test_bad_arguments_get_one_line(tmp_path, capsys, argv, expected):
    assert _bench().main([*argv, "--work-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err


def test_question_kinds_counts_every_short_answer_item_seen_and_fresh(stage, capsys):
    from vlmsweep.data.world import build as world

    work, out = stage
    assert _load("question_kinds").main(["--stage", out, "--work-dir", str(work.local_root), "--items", "60"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| question kind | trained on (world seed 0) | fresh (seed 7) |"
    cell = re.compile(r"^(\d\.\d\d) \((\d+)\)$")
    seen = {}
    for line in lines[2:]:
        kind, *cells = line.strip("| ").split(" | ")
        for c in cells:
            assert cell.match(c) and 0 <= float(cell.match(c)[1]) <= 1, line
        seen[kind] = int(cell.match(cells[0])[2])
    # the tiny world's plan (the stage trained on it): each short-answer item of the first 60, once
    plan = world.instruct_plan(0, world.WORLD_SIZES["tiny"][1])[:60]
    assert sum(seen.values()) == sum(k in ("vqa", "yes_no", "count", "ocr") for k in plan)
    assert seen["exists"] == plan.count("yes_no")


def test_question_kinds_refuses_what_is_not_a_stage(tmp_path, capsys):
    assert _load("question_kinds").main(["--stage", str(tmp_path), "--work-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a finished stage" in err
