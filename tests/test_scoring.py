"""Benchmark scoring: answer normalisation and parsing on hand-written tricky answers,
the official metrics on hand-made answer keys, and perfect predictions scoring the
maximum on every world benchmark set."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from vlmsweep.config.errors import UnknownNameError
from vlmsweep.data.world.benchmarks import BENCHMARKS as WORLD, MME_SUBTASKS, build_benchmarks
from vlmsweep.eval.benchmarks import BENCHMARKS, get_benchmark
from vlmsweep.eval.benchmarks.gqa import gqa_answer
from vlmsweep.eval.benchmarks.mme import COGNITION, PERCEPTION, mme_answer
from vlmsweep.eval.benchmarks.mmmu import parse_choice
from vlmsweep.eval.benchmarks.mmvet import GRADING_PROMPT, MMVet, OpenAIJudge
from vlmsweep.eval.benchmarks.pope import pope_answer
from vlmsweep.eval.benchmarks.scienceqa import sqa_letter
from vlmsweep.eval.benchmarks.vqav2 import vqa_accuracy
from vlmsweep.eval.normalize import CONTRACTIONS, normalize_answer

SINGLE = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    build_benchmarks(root, seed=0, size="tiny", image_size=64)
    return root


def _load(name: str, root: Path):
    bench = get_benchmark(name)
    return bench, bench.load_items(root / name), bench.load_annotations(root / name)


def _perfect(name: str, annotations) -> dict:
    """The answer key, written as a model would answer."""
    if name == "vqav2":
        return {q: a["multiple_choice_answer"] for q, a in annotations.items()}
    if name == "textvqa":
        return {q: max(ans, key=ans.count) for q, ans in annotations.items()}
    if name == "scienceqa":
        return {q: "ABCDE"[p["answer"]] for q, p in annotations.items()}
    if name == "pope":
        return {q: a["label"].capitalize() + "." for q, a in annotations.items()}
    return {q: a["answer"] for q, a in annotations.items()}  # gqa, mme, mmmu


# ---- registry and prompts ---------------------------------------------------------------

def test_registry_is_exact():
    assert set(BENCHMARKS) == set(WORLD) | {"mmvet"}
    for name, bench in BENCHMARKS.items():
        assert bench.name == name and bench.metrics
    with pytest.raises(UnknownNameError, match="allowed: gqa, mme, mmmu, mmvet, pope"):
        get_benchmark("VQAv2")
    with pytest.raises(UnknownNameError):
        get_benchmark("vqa")  # no substring matching


@pytest.mark.parametrize("name,suffix", [("vqav2", SINGLE), ("gqa", SINGLE), ("textvqa", SINGLE),
                                         ("scienceqa", LETTER), ("pope", SINGLE), ("mme", SINGLE),
                                         ("mmmu", LETTER)])
def test_load_items_appends_the_llava_prompt(world, name, suffix):
    rows = [json.loads(l) for l in (world / name / "questions.jsonl").read_text().splitlines()]
    items = get_benchmark(name).load_items(world / name)
    assert len(items) == len(rows)
    for item, r in zip(items, rows):
        assert item.question_id == r["question_id"]
        assert item.prompt.startswith(r["text"]) and item.prompt.endswith(suffix)
        assert item.prompt.count(suffix.strip()) == 1
        assert item.images == ([r["image"]] if "image" in r else [])
        assert all((world / name / "images" / p).is_file() for p in item.images)
    if name == "textvqa":
        for item, r in zip(items, rows):
            assert item.prompt == f"{r['text']}\nReference OCR token: {', '.join(r['ocr_tokens'])}{suffix}"
    if name == "mme":
        assert all("Please answer yes or no." + SINGLE in i.prompt for i in items)
    if name == "scienceqa":
        assert any(not i.images for i in items)  # text-only questions have no image
    if name == "pope":
        assert {i.extra["category"] for i in items} == {"random", "popular", "adversarial"}


def test_prompt_not_doubled_for_llava_question_files(tmp_path):
    # LLaVA's own question files carry the prompt (and TextVQA's OCR line) already
    text = "what is written?\nReference OCR token: stop" + SINGLE
    (tmp_path / "questions.jsonl").write_text(json.dumps(
        {"question_id": 7, "image": "a.jpg", "text": text, "ocr_tokens": ["stop"]}) + "\n")
    for name in ("textvqa", "vqav2"):
        assert get_benchmark(name).load_items(tmp_path)[0].prompt == text


def test_mmvet_items_from_release_layout(tmp_path):
    meta = {"v1_0": {"imagename": "v1_0.png", "question": "What is x in the equation?",
                     "answer": "-1 <AND> -5", "capability": ["ocr", "math"]}}
    (tmp_path / "mm-vet.json").write_text(json.dumps(meta))
    [item] = get_benchmark("mmvet").load_items(tmp_path)
    assert (item.question_id, item.images, item.prompt) == ("v1_0", ["v1_0.png"], "What is x in the equation?")
    assert item.extra == {"capability": ["ocr", "math"]}


# ---- normalisation and parsing ------------------------------------------------------------

@pytest.mark.parametrize("raw,norm", [
    ("Yes.", "yes"), ("yes", "yes"), ("  YES \n", "yes"), ("two", "2"), ("None", "0"),
    ("The dog", "dog"), ("a red circle.", "red circle"), ("dont", "don't"), ("isnt", "isn't"),
    ("t-shirt", "t shirt"), ("3.5", "3.5"), ("1,000", "1000"), ("what?", "what"),
    ("left / right", "left right"), ("dog's", "dog 's"), ("ten\tapples", "10 apples"), ("", ""),
])
def test_evalai_normalisation(raw, norm):
    assert normalize_answer(raw) == norm


def test_contraction_map_has_the_official_entries():
    assert len(CONTRACTIONS) >= 30
    assert CONTRACTIONS["wont"] == "won't" and CONTRACTIONS["youre"] == "you're"


@pytest.mark.parametrize("hits,acc", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_leave_one_out_accuracy(hits, acc):
    # k matches of 10: leaving out a match leaves k-1, leaving out another leaves k;
    # k=2: (2 * 1/3 + 8 * 2/3) / 10 = 0.6; k=3: (3 * 2/3 + 7 * 1) / 10 = 0.9
    answers = ["2"] * hits + ["3"] * (10 - hits)
    assert vqa_accuracy("two", answers) == pytest.approx(acc)
    assert vqa_accuracy("Two.", answers) == pytest.approx(acc)


@pytest.mark.parametrize("raw,letter", [
    ("B", "B"), ("B.", "B"), ("(B)", "B"), ("B)", "B"), (" C \n", "C"), ("B. blue", "B"),
    ("(B) blue", "B"), ("B\nBecause it is blue.", "B"), ("The answer is B.", "B"),
    ("The answer is (B).", "B"), ("Hmm. The answer is D", "D"), ("The answer is Blue.", None),
    ("I cannot tell", None), ("", None), ("b", None), ("A cat", None),
])
def test_scienceqa_letter(raw, letter):
    assert sqa_letter(raw) == letter


@pytest.mark.parametrize("raw,label", [
    ("Yes", "yes"), ("yes.", "yes"), ("", "yes"), ("I cannot tell", "yes"),
    ("No", "no"), ("No.", "no"), ("no, there is none", "no"), ("There is not a dog.", "no"),
    ("Not really", "no"), ("Yes. There is no cat elsewhere.", "yes"), ("nothing", "yes"),
])
def test_pope_first_sentence_rule(raw, label):
    assert pope_answer(raw) == label


@pytest.mark.parametrize("raw,label", [
    ("Yes", "yes"), ("Yes.", "yes"), (" yes, it is", "yes"), ("No", "no"), ("Not at all", "no"),
    ("I cannot tell", "other"), ("", "other"), ("maybe", "other"),
])
def test_mme_parse(raw, label):
    assert mme_answer(raw) == label


def test_gqa_answer():
    assert gqa_answer("Left.") == gqa_answer(" left ") == "left"


OPTIONS = ["triangle", "square", "star", "dark red"]


@pytest.mark.parametrize("raw,letter", [
    ("(B)", "B"), ("B", "B"), ("B.", "B"), ("C. star", "C"), ("The answer is (C).", "C"),
    ("(A) or maybe (C)", "C"),  # several: the last one written
    ("I think the answer is A, not B", "B"),
    ("The shape that appears most often is the square.", "B"),  # > 5 words: option text
    ("Looking closely, every shape in it is dark red.", "D"),
    ("square", None), ("I do not know the answer", None), ("", None),
])
def test_mmmu_parse(raw, letter):
    assert parse_choice(raw, OPTIONS) == letter


def test_mmmu_nested_option_text():
    # "red" lies inside the matched "dark red": not a separate candidate
    assert parse_choice("All of the shapes here are coloured dark red", ["red", "dark red"]) == "B"


# ---- scores on hand-made keys -----------------------------------------------------------

def _vqa_key():
    def ann(qid, atype, answers):
        return qid, {"question_id": qid, "answer_type": atype, "multiple_choice_answer": answers[0],
                     "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)]}
    return dict([ann(1, "yes/no", ["yes"] * 10), ann(2, "number", ["2"] * 2 + ["3"] * 8),
                 ann(3, "other", ["red"] * 10)])


def test_vqav2_score_missing_unknown_and_types():
    bench = get_benchmark("vqav2")
    out = bench.score({"1": "Yes.", 2: "two", 99: "cat"}, _vqa_key())  # string and int ids
    assert out["metrics"]["accuracy"] == pytest.approx(100 * (1 + 0.6 + 0) / 3)
    assert out["metrics"]["yes/no"] == 100 and out["metrics"]["number"] == pytest.approx(60)
    assert out["metrics"]["other"] == 0
    assert out["counts"] == {"questions": 3, "predicted": 2, "missing": 1, "empty": 0, "unknown": 1}
    assert any("no prediction" in n for n in out["notes"]) and any("ignored" in n for n in out["notes"])
    missing = next(i for i in out["items"] if i["question_id"] == 3)
    assert missing["prediction"] is None and missing["correct"] == 0


def test_textvqa_both_annotation_layouts(tmp_path):
    answers = ["stop"] * 3 + ["go"] * 7
    real = {"dataset_name": "textvqa", "data": [{"question_id": 5, "answers": answers}]}
    vqa_like = {"annotations": [{"question_id": 5, "answers": [{"answer": a} for a in answers]}]}
    bench = get_benchmark("textvqa")
    for i, layout in enumerate((real, vqa_like)):
        path = tmp_path / f"{i}.json"
        path.write_text(json.dumps(layout))
        key = bench.load_annotations(path)
        assert key == {5: answers}
        assert bench.score({5: "STOP."}, key)["metrics"]["accuracy"] == pytest.approx(90)
        assert bench.score({5: ""}, key)["metrics"]["accuracy"] == 0


def test_scienceqa_unparsed_and_image_accuracy():
    key = {"1": {"choices": ["a", "b", "c"], "answer": 1, "image": "image.png"},
           "2": {"choices": ["a", "b"], "answer": 0, "image": None},
           "3": {"choices": ["a", "b"], "answer": 0, "image": "image.png"},
           "4": {"choices": ["a", "b"], "answer": 1, "image": None}}
    out = get_benchmark("scienceqa").score(
        {"1": "The answer is (B).", "2": "A", "3": "I cannot tell", "4": "C"}, key)
    assert out["metrics"] == {"accuracy": 50.0, "img_accuracy": 50.0}
    assert out["counts"]["unparsed"] == 2  # no letter, and a letter beyond the 2 choices
    assert [i["parsed"] for i in out["items"]] == ["B", "A", None, None]


def test_mme_acc_plus_on_a_pair_set():
    key = {f"existence/{img}_{j}": {"image": f"existence/{img}.png", "category": "existence",
                                    "answer": ans, "question_id": f"existence/{img}_{j}"}
           for img in ("0000", "0001") for j, ans in enumerate(("Yes", "No"))}
    preds = {"existence/0000_0": "Yes.", "existence/0000_1": "no",  # image 0: both right
             "existence/0001_0": "Yes", "existence/0001_1": "I cannot tell"}  # image 1: one wrong
    out = get_benchmark("mme").score(preds, key)
    m = out["metrics"]
    assert (m["existence/acc"], m["existence/acc+"], m["existence"]) == (75, 50, 125)
    assert m["perception"] == 125 and "cognition" not in m
    assert out["counts"]["other"] == 1
    assert any("no cognition subtasks" in n for n in out["notes"])


def test_mmmu_fallback_is_deterministic_and_reported():
    key = {f"validation_Math_{i}": {"options": OPTIONS, "answer": "B", "question_type": "multiple-choice"}
           for i in range(1, 21)}
    preds = {q: "I really have no idea about this one" for q in key}
    bench = get_benchmark("mmmu")
    first, again = bench.score(preds, key), bench.score(preds, key)
    assert first["counts"]["fallback"] == 20 and all(i["fallback"] for i in first["items"])
    assert [i["parsed"] for i in first["items"]] == [i["parsed"] for i in again["items"]]
    assert len({i["parsed"] for i in first["items"]}) > 1  # seeded per question, not one constant
    assert any(n.startswith("fallback: 20") for n in first["notes"])
    one = bench.score({"validation_Math_1": "(B)"}, key)
    assert one["counts"]["fallback"] == 0 and one["counts"]["missing"] == 19
    assert one["metrics"]["accuracy"] == 5


# ---- MM-Vet -------------------------------------------------------------------------------

MMVET_KEY = {"v1_0": {"question": "What is x?", "answer": "-1 <AND> -5", "capability": ["ocr", "math"]},
             "v1_1": {"question": "What colour?", "answer": "red", "capability": ["rec"]},
             "v1_2": {"question": "Who?", "answer": "Ada", "capability": ["rec", "know"]}}


class FakeJudge:
    grades = {"x = -1": 0.5, "red": 1.0, "Bob": 0.0}

    def __init__(self):
        self.calls = []

    def grade(self, question, answer, prediction):
        self.calls.append((question, answer, prediction))
        return self.grades[prediction]


def test_mmvet_without_a_judge_is_skipped():
    out = get_benchmark("mmvet").score({"v1_0": "x = -1"}, MMVET_KEY)
    assert out["skipped"] is True and out["metrics"] == {}
    assert "needs a judge" in out["notes"][0] and "eval.judge" in out["notes"][0]


def test_mmvet_with_a_judge_reports_the_mean_grade():
    judge = FakeJudge()
    preds = {"v1_0": "x = -1", "v1_1": "red", "v1_2": "Bob"}
    out = get_benchmark("mmvet").score(preds, MMVET_KEY, judge=judge)
    assert out["skipped"] is False
    assert out["metrics"]["total"] == pytest.approx(100 * 1.5 / 3)
    assert out["metrics"]["rec"] == 50 and out["metrics"]["math"] == 50 and out["metrics"]["know"] == 0
    assert len(judge.calls) == 3
    # a missing prediction is graded 0 without asking the judge
    out = MMVet(judge=FakeJudge()).score({"v1_1": "red"}, MMVET_KEY)
    assert out["metrics"]["total"] == pytest.approx(100 / 3) and out["counts"]["missing"] == 2


class _FakeChat(BaseHTTPRequestHandler):
    replies: list[str] = []
    seen: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        reply = json.dumps({"choices": [{"message": {"content": type(self).replies.pop(0)}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    server = HTTPServer(("127.0.0.1", 0), _FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeChat.replies, _FakeChat.seen = [], []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_openai_judge_prompt_and_retries(chat_server, monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    judge = OpenAIJudge(chat_server, "judge-model", api_key_env="TEST_JUDGE_KEY")
    _FakeChat.replies = ["0.7"]
    assert judge.grade("What is x?", "-1<AND>-5", "x = -1") == 0.7
    first = _FakeChat.seen[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    assert (first["model"], first["max_tokens"], first["temperature"]) == ("judge-model", 3, 0.0)
    assert first["messages"][0]["content"] == GRADING_PROMPT + "\nWhat is x? | -1 <AND> -5 | x = -1 | "
    # unusable replies are asked again with the digit request, warming up; 5 misses -> 0.0
    _FakeChat.replies, _FakeChat.seen = ["Correct", "1.5", "0.4 because"], []
    assert judge.grade("q", "a", "p") == 0.4
    assert [s["temperature"] for s in _FakeChat.seen] == [0.0, 0.0, 0.5]
    assert _FakeChat.seen[1]["messages"][0]["content"].endswith("(digit): ")
    _FakeChat.replies, _FakeChat.seen = ["no"] * 5, []
    assert judge.grade("q", "a", "p") == 0.0 and len(_FakeChat.seen) == 5


# ---- the world's benchmark sets -----------------------------------------------------------

@pytest.mark.parametrize("name", WORLD)
def test_perfect_predictions_score_the_maximum(world, name):
    bench, items, key = _load(name, world)
    truth = _perfect(name, key)
    preds = {i.question_id: truth[i.question_id] for i in items}  # keyed as generation keys them
    out = bench.score(preds, key)
    c = out["counts"]
    assert (c["questions"], c["missing"], c["unknown"]) == (len(items), 0, 0)
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


def test_pope_all_yes_and_empty(world):
    bench, items, key = _load("pope", world)
    positives = sum(a["label"] == "yes" for a in key.values()) / len(key)
    for text in ("Yes", ""):
        m = bench.score({i.question_id: text for i in items}, key)["metrics"]
        assert m["yes_ratio"] == 1 and m["recall"] == 100
        assert m["precision"] == pytest.approx(100 * positives)
        assert m["accuracy"] == pytest.approx(100 * positives)
        assert m["f1"] == pytest.approx(200 * positives / (positives + 1))
    # all "no": nothing predicted positive, so precision and F1 are 0, not a division error
    m = bench.score({i.question_id: "No." for i in items}, key)["metrics"]
    assert (m["yes_ratio"], m["precision"], m["recall"], m["f1"]) == (0, 0, 0, 0)


def test_world_scores_survive_missing_and_junk(world):
    for name in WORLD:
        bench, items, key = _load(name, world)
        half = {i.question_id: "" for i in items[: len(items) // 2]} | {"no-such-id": "yes"}
        out = bench.score(half, key)
        c = out["counts"]
        assert c["missing"] == len(items) - len(items) // 2 and c["unknown"] == 1
        assert c["empty"] == len(items) // 2
        assert all(0 <= v <= 200 * len(MME_SUBTASKS) for v in out["metrics"].values())
