"""LLaVA's answer files scored as LLaVA's official scripts score them, digit for digit.

The fixtures (tests/fixtures/llava/) are a miniature playground/data/eval in the official
layouts, with answers files in LLaVA's format (answers/<bench>.jsonl). Each expected number
is worked out by hand below from the published rule; TextVQA, POPE and ScienceQA were also
run through LLaVA's own eval_textvqa.py, eval_pope.py and eval_science_qa.py, which print
exactly these numbers (80.00%; the per-split lines; 57.14% / 75.00%).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from vlmsweep.cli import main
from vlmsweep.config.errors import ConfigError
from vlmsweep.eval.run import score_answers

FIX = Path(__file__).parent / "fixtures" / "llava"


def _cli_score(capsys, bench, answers, annotations, *extra) -> dict:
    assert main(["eval", "score", "--bench", bench, "--answers", str(answers), "--annotations", str(annotations),
                 *map(str, extra)]) == 0
    return json.loads(capsys.readouterr().out)


def _cli_error(capsys, *argv) -> str:
    assert main(["eval", "score", *map(str, argv)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_textvqa_keys_answers_by_image_id_and_question(capsys):
    # img_a "What brand is this?": "Sony." -> sony, 6 of 10 agree -> 1.0
    # img_a "what number is shown?": "three" -> 3, 3 of 10 ("3","3","three") -> (3*2/3 + 7*1)/10 = 0.9
    # img_b (prompt starts "Reference OCR token:"): "STOP" -> stop, 1 of 10 -> (1*0 + 9*1/3)/10 = 0.3
    # img_c (two-line prompt): "Cat!" -> cat, 4 of 10 ("the cat" x2, "cat" x2) -> 1.0
    # mean over the 4 answers given (the 5th question has none and is not counted): 3.2 / 4 = 80.00%
    out = _cli_score(capsys, "textvqa", FIX / "answers/textvqa.jsonl", FIX / "textvqa/TextVQA_0.5.1_val.json")
    assert out["metrics"]["accuracy"] == pytest.approx(80.0)
    assert (out["counts"]["answered"], out["counts"]["missing"], out["counts"]["questions"]) == (4, 1, 5)
    assert any("not counted" in n for n in out["notes"])
    result = score_answers("textvqa", FIX / "answers/textvqa.jsonl", FIX / "textvqa")
    assert [round(i["correct"], 6) for i in result["items"]] == [1.0, 0.9, 0.3, 1.0]


POPE_SPLITS = {
    # labels yes no yes no; answers Yes / No / "No, it is not." / "There is no dog." -> TP 1, TN 2, FN 1
    "random": {"f1": 200 / 3, "accuracy": 75.0, "precision": 100.0, "recall": 50.0, "yes_ratio": 0.25},
    # labels yes yes no no; "Yes, there is." / "NO" / "Not at all" / "yes": all read yes (the
    # rule is case-sensitive) -> TP 2, FP 2
    "popular": {"f1": 200 / 3, "accuracy": 50.0, "precision": 50.0, "recall": 100.0, "yes_ratio": 1.0},
    # labels no yes no yes; "no" / "Yes." / "I see no such thing. Maybe." / "There is a cat, no
    # doubt." -> TN 2, TP 1, FN 1
    "adversarial": {"f1": 200 / 3, "accuracy": 75.0, "precision": 100.0, "recall": 50.0, "yes_ratio": 0.25},
}


def _check_pope(metrics: dict) -> None:
    for split, expected in POPE_SPLITS.items():
        for m, v in expected.items():
            assert metrics[f"{split}/{m}"] == pytest.approx(v), (split, m)
    assert metrics["f1"] == pytest.approx(200 / 3) and metrics["accuracy"] == pytest.approx(200 / 3)


def test_pope_splits_come_from_the_question_files_category(capsys, tmp_path):
    answers = FIX / "answers/pope.jsonl"
    for given, extra in ((FIX / "pope", ()), (FIX / "pope/llava_pope_test.jsonl", ()),
                               (FIX / "pope/coco", ("--questions", FIX / "pope/llava_pope_test.jsonl"))):
        out = _cli_score(capsys, "pope", answers, given, *extra)
        _check_pope(out["metrics"])
        assert out["counts"]["random/TP"] == 1 and out["counts"]["popular/FP"] == 2
    # one merged label file, a category on each line: the same splits, the same numbers
    merged = tmp_path / "pope_labels.jsonl"
    merged.write_text("".join(json.dumps({**json.loads(line), "category": s}) + "\n" for s in POPE_SPLITS
                              for line in (FIX / f"pope/coco/coco_pope_{s}.json").read_text().splitlines()))
    _check_pope(_cli_score(capsys, "pope", answers, merged, "--questions", FIX / "pope/llava_pope_test.jsonl")
                ["metrics"])


def test_pope_files_that_do_not_belong_together_are_one_line_errors(capsys, tmp_path):
    answers = FIX / "answers/pope.jsonl"
    shutil.copytree(FIX / "pope/coco", tmp_path / "alone/coco")  # no question file beside it
    err = _cli_error(capsys, "--bench", "pope", "--answers", answers, "--annotations", tmp_path / "alone/coco")
    assert "llava_pope_test.jsonl" in err and "--questions" in err
    shutil.copytree(FIX / "pope", tmp_path / "pope")
    labels = tmp_path / "pope/coco/coco_pope_random.json"
    labels.write_text(labels.read_text().replace("a cat", "a cow"))
    err = _cli_error(capsys, "--bench", "pope", "--answers", answers, "--annotations", tmp_path / "pope")
    assert "coco_pope_random.json:2" in err and "a cow" in err
    labels.write_text("\n".join(labels.read_text().splitlines()[:3]) + "\n")
    assert "3 random labels but llava_pope_test.jsonl has 4" in _cli_error(
        capsys, "--bench", "pope", "--answers", answers, "--annotations", tmp_path / "pope")


def test_scienceqa_is_strict_and_reads_img_from_the_prompt(capsys):
    # test split: 1..7 (8 is "val": its answer is ignored). Letters by eval_science_qa.py:
    # 1 "B" right; 2 "A. blue" right; 3 "The answer is C." right; 4 "(B)" no letter;
    # 5 "A" right (text question); 6 "The answer is B" no letter (nothing after B); 7 no answer.
    # accuracy 4/7 = 57.14%. IMG = answers whose prompt has <image>: 1-4, 3 right = 75.00%
    # (7 has an image in problems.json but no answer: counted as a text question, as LLaVA does).
    out = _cli_score(capsys, "scienceqa", FIX / "answers/scienceqa.jsonl", FIX / "scienceqa")
    assert round(out["metrics"]["accuracy"], 2) == 57.14 and out["metrics"]["img_accuracy"] == 75.0
    c = out["counts"]
    assert (c["questions"], c["answered"], c["missing"], c["unknown"], c["unparsed"], c["with_image"]) == \
        (7, 6, 1, 1, 2, 4)


def test_gqa_is_convert_gqa_for_eval_then_exact_match(capsys):
    # balanced: 201 "Yes." -> yes right (verify); 202 "The table." -> "the table" wrong (query);
    # 203 "no" right (logical); 204 "Left" -> left right (choose); 205 "white " wrong (query: no strip)
    # 206 is not balanced: not scored. accuracy 3/5, binary 3/3, open 0/2
    out = _cli_score(capsys, "gqa", FIX / "answers/gqa.jsonl", FIX / "gqa")
    assert out["metrics"] == {"accuracy": 60.0, "binary": 100.0, "open": 0.0}
    assert out["counts"]["questions"] == 5


def test_mme_is_calculation_py_and_writes_its_txt_files(capsys, tmp_path):
    # existence: image 1 Yes/No both right; image 2 "yes, there is" right, "I think so" other ->
    #   acc 3/4, acc+ 1/2 -> 75 + 50 = 125
    # artwork (images/ + questions_answers_YN/): "Not sure" reads no (wrong), "No" right -> 50 + 0 = 50
    # code_reasoning: the release has "  Please answer yes or no." (two spaces); LLaVA's prompt
    #   lacks it: found through convert_answer_to_mme.py's fallback; both right -> 200
    out = _cli_score(capsys, "mme", FIX / "answers/mme.jsonl", FIX / "MME", "--out", tmp_path)
    m = out["metrics"]
    assert (m["existence"], m["existence/acc"], m["existence/acc+"]) == (125, 75, 50)
    assert (m["artwork"], m["code_reasoning"], m["perception"], m["cognition"]) == (50, 200, 175, 200)
    assert out["counts"]["other"] == 1
    lines = (tmp_path / "mme_eval_tool/existence.txt").read_text().splitlines()
    assert lines[0] == "000001.jpg\tIs there a dog in this image? Please answer yes or no.\tYes\tYes"
    assert lines[3].endswith("\tNo\tI think so") and len(lines) == 4
    code = (tmp_path / "mme_eval_tool/code_reasoning.txt").read_text()
    assert "Is the output 3?  Please answer yes or no.\tNo\tno" in code


def test_two_answers_for_one_question_name_both_lines(capsys, tmp_path):
    answers = tmp_path / "answers.jsonl"
    lines = (FIX / "answers/gqa.jsonl").read_text().splitlines()
    answers.write_text("\n".join(lines + [lines[1]]) + "\n")
    err = _cli_error(capsys, "--bench", "gqa", "--answers", answers, "--annotations", FIX / "gqa")
    assert "answers.jsonl:7: a second answer for gqa question '202'" in err and "answers.jsonl:2" in err


@pytest.mark.parametrize("bench,annotations,needle", [
    ("textvqa", "gqa", "textvqa"), ("scienceqa", "textvqa", "problems.json"), ("mme", "gqa", "not mme"),
    ("gqa", "scienceqa", "testdev_balanced_questions.json"), ("pope", "textvqa", "coco/coco_pope_<split>.json"),
    ("vqav2", "gqa", "v2_mscoco_val2014_annotations.json"), ("mmvet", "gqa", "mm-vet.json"),
])
def test_another_benchmarks_folder_is_one_line_naming_what_was_expected(capsys, bench, annotations, needle):
    err = _cli_error(capsys, "--bench", bench, "--answers", FIX / "answers/gqa.jsonl",
                     "--annotations", FIX / annotations)
    assert needle in err and "--annotations" in err


def test_answers_without_the_prompt_llava_writes_are_refused_where_the_rule_needs_it(tmp_path):
    bare = tmp_path / "bare.jsonl"
    for bench, source in (("textvqa", "textvqa"), ("scienceqa", "scienceqa"), ("mme", "mme")):
        rows = [json.loads(line) for line in (FIX / f"answers/{source}.jsonl").read_text().splitlines()]
        bare.write_text("".join(json.dumps({"question_id": r["question_id"], "text": r["text"]}) + "\n" for r in rows))
        with pytest.raises(ConfigError, match=r"bare.jsonl:1: .*prompt"):
            score_answers(bench, bare, FIX / ("MME" if bench == "mme" else bench))
