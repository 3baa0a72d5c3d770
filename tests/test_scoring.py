"""Benchmark scoring rules: the registry, prompts, answer normalisation and each official
parsing rule on hand-written tricky answers, and every world benchmark set scoring the maximum
for perfect answers and surviving missing and junk ones. (Official-format fixtures with
hand-computed official numbers: tests/test_benchmarks_*.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from vlmsweep.config.errors import ConfigError, UnknownNameError
from vlmsweep.eval.benchmarks import BENCHMARKS, HEADLINE, WORLD_BENCHMARKS, Answer, get_benchmark
from vlmsweep.eval.benchmarks.gqa.score import gqa_prediction
from vlmsweep.eval.benchmarks.mme.layout import answer_key as mme_key
from vlmsweep.eval.benchmarks.mme.score import COGNITION, PERCEPTION, mme_answer
from vlmsweep.eval.benchmarks.mmmu.score import open_correct, parse_choice, parse_open
from vlmsweep.eval.benchmarks.pope.score import pope_answer
from vlmsweep.eval.benchmarks.scienceqa.score import sqa_letter
from vlmsweep.eval.benchmarks.textvqa.layout import question_of
from vlmsweep.eval.benchmarks.vqav2.score import vqa_accuracy
from vlmsweep.eval.benchmarks.world_common import MME_SUBTASKS
from vlmsweep.eval.normalize import CONTRACTIONS, m4c_accuracy, normalize_answer
from vlmsweep.eval.world_sets import build_benchmarks

SINGLE = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    build_benchmarks(root, seed=0, size="tiny", image_size=64)
    return root


def _load(name: str, root: Path):
    bench = get_benchmark(name)
    folder = bench.folder(root)
    return bench, bench.load_items(folder), bench.folder_key(folder)


def _truth(name: str, bench, item, key) -> str:
    """The answer key's answer to an item, written as a model would answer."""
    a = Answer.of(item, "", bench.answer_prompt(item))
    if name == "vqav2":
        return key[str(item.question_id)]["multiple_choice_answer"]
    if name == "textvqa":
        human = key[bench.answer_key(a)]
        return max(human, key=human.count)
    if name == "scienceqa":
        return "ABCDE"[key[str(item.question_id)]["answer"]]
    if name == "pope":
        return key[str(item.question_id)]["label"].capitalize() + "."
    if name == "mme":
        return key.truth[mme_key(a, key)]
    return key[str(item.question_id)]["answer"]  # gqa, mmmu


def _answers(bench, items, texts) -> list[Answer]:
    return [Answer.of(i, t, bench.answer_prompt(i)) for i, t in zip(items, texts)]


# ---- registry and prompts ---------------------------------------------------------------

def test_registry_is_exact_and_feeds_the_headline():
    assert set(BENCHMARKS) == set(WORLD_BENCHMARKS) | {"mmvet"}
    assert HEADLINE[0] == ("vqav2", "accuracy") and ("pope", "f1") in HEADLINE and ("mmvet", "total") in HEADLINE
    for name, bench in BENCHMARKS.items():
        assert bench.name == name and bench.metrics and bench.folders and bench.layout
    assert [n for n, b in BENCHMARKS.items() if b.needs_judge] == ["mmvet"]
    with pytest.raises(UnknownNameError, match="allowed: gqa, mme, mmmu, mmvet, pope"):
        get_benchmark("VQAv2")
    with pytest.raises(UnknownNameError):
        get_benchmark("vqa")  # no substring matching


@pytest.mark.parametrize("name,suffix", [("vqav2", SINGLE), ("gqa", SINGLE), ("textvqa", SINGLE),
                                         ("scienceqa", LETTER), ("pope", SINGLE), ("mme", SINGLE),
                                         ("mmmu", LETTER)])
def test_items_carry_the_llava_prompt_once_and_their_images(world, name, suffix):
    bench, items, _ = _load(name, world)
    folder = bench.folder(world)
    assert items and all(i.prompt.endswith(suffix) and i.prompt.count(suffix.strip()) == 1 for i in items)
    assert bench.prompt == suffix.strip()
    for item in items:
        for image in item.images:
            assert isinstance(image, bytes) or (folder / image).is_file()
    if name == "scienceqa":
        assert any(not i.images for i in items)  # text-only questions have no image
        assert all(bench.answer_prompt(i).startswith("<image>\n") == bool(i.images) for i in items)
    if name == "pope":
        assert {i.extra["category"] for i in items} == {"random", "popular", "adversarial"}


def test_a_missing_benchmark_folder_names_what_is_expected(tmp_path):
    with pytest.raises(ConfigError, match=r"no folder for textvqa \(expected textvqa/ holding "
                                          r"llava_textvqa_val_v051_ocr.jsonl and TextVQA_0.5.1_val.json\)"):
        get_benchmark("textvqa").folder(tmp_path)
    with pytest.raises(ConfigError, match="MME/ or mme/"):
        get_benchmark("mme").folder(tmp_path)


# ---- normalisation and parsing ------------------------------------------------------------

@pytest.mark.parametrize("raw,norm", [
    ("Yes.", "yes"), ("yes", "yes"), ("  YES \n", "yes"), ("two", "2"), ("None", "0"),
    ("The dog", "dog"), ("a red circle.", "red circle"), ("dont", "don't"), ("isnt", "isn't"),
    ("t-shirt", "t shirt"), ("3.5", "3.5"), ("1,000", "1000"), ("what?", "what"),
    ("left / right", "left right"), ("dog's", "dog 's"), ("ten\tapples", "10 apples"), ("", ""),
])
def test_evalai_normalisation(raw, norm):
    assert normalize_answer(raw) == norm


def test_evalai_deletes_at_most_32_periods():
    # m4c's PERIOD_STRIP.sub("", text, re.UNICODE) passes re.UNICODE (32) as sub's count
    assert normalize_answer("a." * 40) == "a" * 33 + ".a" * 7 + "."


def test_contraction_map_has_the_official_entries():
    assert len(CONTRACTIONS) >= 30
    assert CONTRACTIONS["wont"] == "won't" and CONTRACTIONS["youre"] == "you're"


@pytest.mark.parametrize("hits,acc", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_accuracy(hits, acc):
    # k matches of 10: leaving out a match leaves k-1, leaving out another leaves k;
    # k=2: (2 * 1/3 + 8 * 2/3) / 10 = 0.6; k=3: (3 * 2/3 + 7 * 1) / 10 = 0.9
    answers = ["2"] * hits + ["3"] * (10 - hits)
    assert m4c_accuracy("two", answers) == pytest.approx(acc)
    assert vqa_accuracy(normalize_answer("Two."), answers) == pytest.approx(acc)


def test_vqaeval_leaves_unanimous_answers_unprocessed():
    # vqaEval.py normalises only when the 10 answers differ: "2 dogs" never equals ten "two dogs"
    assert vqa_accuracy("2 dogs", ["two dogs"] * 10) == 0
    assert vqa_accuracy("2 dogs", ["two dogs"] * 9 + ["2"]) == pytest.approx(1.0)
    assert vqa_accuracy("1000", ["1,000"] * 5 + ["many"] * 5) == 1.0  # digit,digit: marks deleted


@pytest.mark.parametrize("prompt,question", [
    ("What is it?\nReference OCR token: a, b\nAnswer the question using a single word or phrase.", "what is it?"),
    ("Reference OCR token: a\nWhat is it?\nAnswer the question using a single word or phrase.", "what is it?"),
    ("What Is It?\nAnswer the question using a single word or phrase.", "what is it?"),
    ("OCR tokens: a b Question: Who? Short answer:", "who?"),
    ("What is it?", None), ("a\nb\nc\nd", None),
])
def test_textvqa_question_from_prompt(prompt, question):
    assert question_of(prompt) == question


@pytest.mark.parametrize("raw,letter", [
    ("B", "B"), ("E", "E"), ("B. blue", "B"), ("The answer is B.", "B"), ("The answer is (B).", None),
    ("Hmm. The answer is D, surely", "D"), ("The answer is A. The answer is B.", None),
    ("B.", None), ("(B)", None), ("B)", None), (" C \n", None), ("The answer is B", None),
    ("B\nBecause it is blue.", None), ("I cannot tell", None), ("", None), ("b", None), ("AB", None),
])
def test_scienceqa_letter_is_the_strict_official_rule(raw, letter):
    assert sqa_letter(raw) == letter


@pytest.mark.parametrize("raw,label", [
    ("Yes", "yes"), ("yes.", "yes"), ("", "yes"), ("I cannot tell", "yes"),
    ("No", "no"), ("No.", "no"), ("no, there is none", "no"), ("There is not a dog.", "no"),
    ("Yes. There is no cat elsewhere.", "yes"), ("nothing", "yes"),
    ("Not really", "yes"), ("NO", "yes"), ("no\nway", "yes"),  # case-sensitive words split on " "
])
def test_pope_first_sentence_rule(raw, label):
    assert pope_answer(raw) == label


@pytest.mark.parametrize("raw,label", [
    ("Yes", "yes"), ("Yes.", "yes"), (" yes, it is", "yes"), ("No", "no"), ("Not at all", "no"),
    ("I cannot tell", "other"), ("", "other"), ("maybe", "other"), ("   yes", "other"),
])
def test_mme_parse(raw, label):
    assert mme_answer(raw) == label


def test_gqa_prediction_is_convert_gqa_for_eval():
    assert gqa_prediction("Left.") == gqa_prediction("left..") == "left"
    assert gqa_prediction(" left ") == " left "  # no other cleaning: it does not match "left"


OPTIONS = ["triangle", "square", "star", "dark red"]


@pytest.mark.parametrize("raw,letter", [
    ("(B)", "B"), ("B", "B"), ("B.", "B"), ("The answer is (C).", "C"),
    ("(A) or maybe (C)", "C"),  # several: the last one written
    ("I think the answer is A, not B", "B"),
    ("The shape that appears most often is the square.", "B"),  # > 5 words: option text
    ("Looking closely, every shape in it is dark red.", "D"),
    ("C. star", None), ("square", None), ("I do not know the answer", None), ("", None),
])
def test_mmmu_parse(raw, letter):
    assert parse_choice(raw, OPTIONS) == letter


def test_mmmu_option_text_inside_another_is_official():
    # MMMU's rule: every option whose text occurs; the one found last wins ("red" inside "dark red")
    assert parse_choice("All of the shapes here are coloured dark red", ["red", "dark red"]) == "A"


def test_mmmu_open_answers():
    assert open_correct("42", parse_open("The total is 42.")) and open_correct("42", parse_open("42.0"))
    assert open_correct("paris", parse_open("So the answer is Paris"))
    assert not open_correct("4", parse_open("The answer is 42"))
    assert open_correct("1,000", parse_open("it is 1000"))


# ---- the world's benchmark sets -----------------------------------------------------------

@pytest.mark.parametrize("name", WORLD_BENCHMARKS)
def test_perfect_predictions_score_the_maximum(world, name):
    bench, items, key = _load(name, world)
    out = bench.score(_answers(bench, items, [_truth(name, bench, i, key) for i in items]), key)
    c = out["counts"]
    assert (c["questions"], c["answered"], c["missing"], c["unknown"]) == (len(items), len(items), 0, 0)
    assert all(i["correct"] for i in out["items"]), [i for i in out["items"] if not i["correct"]][:3]
    m = out["metrics"]
    if name == "mme":
        assert m["perception"] == 200 * sum(s in PERCEPTION for s in MME_SUBTASKS)
        assert m["cognition"] == 200 * sum(s in COGNITION for s in MME_SUBTASKS)
        assert all(m[s] == 200 for s in MME_SUBTASKS)
    elif name == "pope":
        for split in ("", "random/", "popular/", "adversarial/"):
            assert m[f"{split}f1"] == m[f"{split}accuracy"] == m[f"{split}precision"] == 100
            assert m[f"{split}yes_ratio"] == pytest.approx(0.5)
    else:
        assert all(v == pytest.approx(100) for v in m.values()), m
    assert list(m)[0] == bench.metrics[0]


def test_pope_all_yes_and_all_no(world):
    bench, items, key = _load("pope", world)
    positives = sum(a["label"] == "yes" for a in key.values()) / len(key)
    for text in ("Yes", ""):
        m = bench.score(_answers(bench, items, [text] * len(items)), key)["metrics"]
        assert m["yes_ratio"] == 1 and m["recall"] == 100
        assert m["precision"] == pytest.approx(100 * positives) and m["accuracy"] == pytest.approx(100 * positives)
        assert m["f1"] == pytest.approx(200 * positives / (positives + 1))
    # all "no": nothing predicted positive, so precision and F1 are 0, not a division error
    out = bench.score(_answers(bench, items, ["No."] * len(items)), key)
    m = out["metrics"]
    assert (m["yes_ratio"], m["precision"], m["recall"], m["f1"]) == (0, 0, 0, 0)
    assert any("divides by zero" in n for n in out["notes"])


def test_world_scores_survive_missing_and_junk(world):
    for name in WORLD_BENCHMARKS:
        bench, items, key = _load(name, world)
        half = items[: len(items) // 2]
        answers = _answers(bench, half, [""] * len(half))
        out = bench.score(answers, key)
        c = out["counts"]
        assert c["answered"] == c["empty"] == len(half) and c["missing"] == len(items) - len(half), name
        assert any("have no answer" in n for n in out["notes"]), name
        assert all(0 <= v <= 200 * len(MME_SUBTASKS) for v in out["metrics"].values())


def test_two_answers_for_one_question_are_an_error(world):
    for name in WORLD_BENCHMARKS:
        bench, items, key = _load(name, world)
        answers = _answers(bench, items[:2], ["a", "b"])
        twice = answers + [Answer(answers[0].question_id, "c", answers[0].prompt, "a.jsonl:3")]
        with pytest.raises(ConfigError, match=r"a.jsonl:3: a second answer .* \(the first is at generated\)"):
            bench.score(twice, key)


def test_answers_for_another_benchmark_are_an_error(world):
    mmmu, items, _ = _load("mmmu", world)
    pope, _, key = _load("pope", world)
    with pytest.raises(ConfigError, match="none of the 3 answers matches a pope question"):
        pope.score(_answers(mmmu, items[:3], ["yes"] * 3), key)
