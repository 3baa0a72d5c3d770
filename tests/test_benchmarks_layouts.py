"""Official layouts read as they ship: every benchmark folder of the fixture playground found and
read without renaming; VQAv2 val scored and test-dev turned into the EvalAI submission; MMMU's
validation parquet with every image of a question; MM-Vet graded by a judge from the command
line, its results written in the official grader's format. Numbers worked out by hand below."""

from __future__ import annotations

import csv
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from PIL import Image
from vlmsweep.cli import main
from vlmsweep.eval.benchmarks import BENCHMARKS, Answer, get_benchmark
from vlmsweep.eval.benchmarks.mmvet.judge import GRADING_PROMPT, OpenAIJudge
from vlmsweep.eval.run import check_benches, score_answers

FIX = Path(__file__).parent / "fixtures" / "llava"


def test_every_benchmark_is_found_in_the_playground_and_read_as_it_ships():
    released = {n: b for n, b in BENCHMARKS.items() if b.released}   # textqa is vlmsweep's own
    assert set(BENCHMARKS) - set(released) == {"textqa"}
    check_benches(list(released), str(FIX))
    counts = {n: len(b.load_items(b.folder(FIX))) for n, b in released.items()}
    assert counts == {"vqav2": 3, "gqa": 6, "textvqa": 5, "scienceqa": 7, "pope": 12, "mme": 8, "mmmu": 2, "mmvet": 3}
    # MMMU's records as JSON: images are paths beside it, every one of a question kept
    assert get_benchmark("mmmu").load_items(FIX / "MMMU")[1].images == [
        "images/validation_Music_2_1.png", "images/validation_Music_2_2.png"]
    [sqa] = [i for i in get_benchmark("scienceqa").load_items(FIX / "scienceqa") if i.question_id == "2"]
    assert sqa.images == ["images/test/2/image.png"]
    assert sqa.prompt == ("Context: Look up.\nWhich color is the sky?\nA. blue\nB. red\n"
                          "Answer with the option's letter from the given choices directly.")
    mme = get_benchmark("mme").load_items(FIX / "MME")
    assert mme[4].images == ["MME_Benchmark_release_version/artwork/images/10002.jpg"]


def test_mme_questions_come_from_the_release_when_llavas_file_is_absent(tmp_path):
    import shutil

    shutil.copytree(FIX / "MME/MME_Benchmark_release_version", tmp_path / "MME/MME_Benchmark_release_version")
    items = get_benchmark("mme").load_items(get_benchmark("mme").folder(tmp_path))
    assert [i.question_id for i in items[:2]] == ["artwork/images/10002.jpg"] * 2
    assert items[0].prompt == ("Is this artwork created by Monet? Please answer yes or no.\n"
                               "Answer the question using a single word or phrase.")


def test_a_missing_layout_file_is_one_line_naming_it(capsys, tmp_path):
    (tmp_path / "stage").mkdir()
    (tmp_path / "textvqa").mkdir()
    with pytest.raises(Exception, match="no folder for textvqa .*llava_textvqa_val_v051_ocr.jsonl"):
        check_benches(["textvqa"], str(tmp_path / "nowhere"))
    with pytest.raises(Exception, match=r"textvqa: no textvqa question file here: expected "
                                        r"llava_textvqa_val_v051_ocr.jsonl"):
        get_benchmark("textvqa").load_items(tmp_path / "textvqa")


def test_vqav2_val_is_scored_with_the_official_vqa_accuracy(capsys, tmp_path):
    # 420 "Yes": ten "yes" -> 1.0; 421 "two" -> "2": answers 2,2,two,3x7 differ, so normalised:
    # three "2" -> (3*2/3 + 7)/10 = 0.9; 70 "Red." -> red: one of ten -> 0.3.
    # accuracy (1 + 0.9 + 0.3) / 3 = 73.33%; per answer type 100 / 90 / 30
    assert main(["eval", "score", "--bench", "vqav2", "--answers", str(FIX / "answers/vqav2-val.jsonl"),
                 "--annotations", str(FIX / "vqav2"), "--out", str(tmp_path)]) == 0
    m = json.loads(capsys.readouterr().out)["metrics"]
    assert round(m["accuracy"], 2) == 73.33 and (m["yes/no"], m["number"], m["other"]) == (100, 90, 30)
    assert json.loads((tmp_path / "vqav2_answers_upload.json").read_text()) == [
        {"question_id": 420, "answer": "yes"}, {"question_id": 421, "answer": "2"},
        {"question_id": 70, "answer": "red"}]


def test_vqav2_test_dev_writes_the_evalai_submission_for_the_whole_test_split(tmp_path):
    bench = get_benchmark("vqav2")
    folder = bench.folder(FIX / "vqav2-test-dev")
    assert [i.question_id for i in bench.load_items(folder)] == [262144000, 262144001]
    assert bench.folder_key(folder) is None
    out = score_answers("vqav2", FIX / "answers/vqav2-test-dev.jsonl", folder, out_dir=tmp_path)
    assert out["skipped"] and "EvalAI" in out["notes"][0]
    # every test2015 question, as convert_vqav2_for_submission.py: EvalAI-normalised, "" unanswered
    assert json.loads((tmp_path / "vqav2_answers_upload.json").read_text()) == [
        {"question_id": 262144000, "answer": "yes"}, {"question_id": 262144001, "answer": "2 dogs"},
        {"question_id": 1, "answer": ""}]


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def mmmu(tmp_path) -> Path:
    """MMMU's validation parquet layout: two subjects, a question with two images, an open one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def record(qid, question, options, answer, images, kind="multiple-choice"):
        return {"id": qid, "question": question, "options": repr(options), "explanation": "", "answer": answer,
                "question_type": kind, "subfield": "x", "img_type": "['Photos']", "topic_difficulty": "Easy",
                **{f"image_{k}": ({"bytes": images[k - 1], "path": f"{qid}_{k}.png"} if k <= len(images) else None)
                   for k in range(1, 8)}}
    subjects = {"Art": [record("validation_Art_1", "Which is red? <image 1> <image 2>", ["left", "right"], "A",
                               [_png("red"), _png("blue")]),
                        record("validation_Art_2", "Which colour?", ["red", "blue", "green"], "C", [_png("green")])],
                "Math": [record("validation_Math_1", "What is 6 x 7?", [], "42", [_png("white")], "open"),
                         record("validation_Math_2", "Pick one", ["1", "2", "3", "4"], "B", [_png("black")])]}
    for subject, rows in subjects.items():
        (tmp_path / "MMMU" / subject).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "MMMU" / subject / "validation-00000-of-00001.parquet")
    return tmp_path


def test_mmmu_parquet_keeps_every_image_and_is_scored_as_mmmu_does(mmmu, tmp_path):
    bench = get_benchmark("mmmu")
    items = {i.question_id: i for i in bench.load_items(bench.folder(mmmu))}
    two = items["validation_Art_1"]
    assert len(two.images) == 2 and Image.open(io.BytesIO(two.images[1])).getpixel((0, 0)) == (0, 0, 255)
    assert two.prompt == ("Which is red? <image 1> <image 2>\n\n(A) left\n(B) right\n\n\n"
                          "Answer with the option's letter from the given choices directly.")
    assert items["validation_Math_1"].prompt.endswith("\n\nAnswer the question using a single word or phrase.")
    # Art_1 "(A)" right; Art_2 "I think it is blue, the colour of the sky" (> 5 words: option text) -> B,
    # wrong; Math_1 "6 x 7 = 42" -> 42 right; Math_2 unanswered: not counted. 2 of 3 = 66.67%
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": q, "text": t}) + "\n" for q, t in (
        ("validation_Art_1", "(A)"), ("validation_Art_2", "I think it is blue, the colour of the sky"),
        ("validation_Math_1", "6 x 7 = 42"))))
    out = score_answers("mmmu", answers, mmmu / "MMMU")
    assert out["metrics"]["accuracy"] == pytest.approx(200 / 3)
    assert out["metrics"]["subject/Art"] == 50 and out["metrics"]["subject/Math"] == 100
    assert [i["parsed"] for i in out["items"][:2]] == ["A", "B"] and out["counts"]["missing"] == 1
    # MMMU's answer_dict_val.json as the key: answers taken as parsed, as main_eval_only.py
    (tmp_path / "answer_dict_val.json").write_text(json.dumps({
        "validation_Art_1": {"question_type": "multiple-choice", "ground_truth": "A"},
        "validation_Math_1": {"question_type": "open", "ground_truth": "42"}}))
    letters = tmp_path / "letters.json"  # TinyLLaVA's convert_answer_to_mmmu.py output: {id: text}
    letters.write_text(json.dumps({"validation_Art_1": "A", "validation_Math_1": "42"}))
    assert score_answers("mmmu", letters, tmp_path / "answer_dict_val.json")["metrics"]["accuracy"] == 100


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


def test_mmvet_without_a_judge_is_not_scored():
    out = score_answers("mmvet", FIX / "answers/mmvet.jsonl", FIX / "mm-vet")
    assert out["skipped"] is True and out["metrics"] == {}
    assert "eval.judge" in out["notes"][0] and "--judge-url" in out["notes"][0]


def test_mmvet_judge_from_the_command_line_and_the_graders_files(chat_server, capsys, tmp_path, monkeypatch):
    # LLaVA's integer ids 0, 1, 2 are v1_0.. (convert_mmvet_for_eval.py); grades 0.5, 1.0, 0.0
    # total = 1.5 / 3 = 50.0; rec (v1_1, v1_2) 50; ocr, math (v1_0) 50; know (v1_2) 0
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _FakeChat.replies = ["0.5", "1.0", "0.0"]
    assert main(["eval", "score", "--bench", "mmvet", "--answers", str(FIX / "answers/mmvet.jsonl"),
                 "--annotations", str(FIX / "mm-vet"), "--judge-url", chat_server, "--judge-model", "judge-x",
                 "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"] == {"total": 50.0, "know": 0.0, "math": 50.0, "ocr": 50.0, "rec": 50.0}
    assert [s["model"] for s in _FakeChat.seen] == ["judge-x"] * 3
    assert "What colour is the car? | red | red | " in _FakeChat.seen[1]["messages"][0]["content"]
    assert json.loads((tmp_path / "mmvet_results.json").read_text()) == {"v1_0": "x = -1", "v1_1": "red", "v1_2": "Bob"}
    grades = json.loads((tmp_path / "mmvet_results_judge-x-grade-1runs.json").read_text())
    assert grades["v1_0"] == {"model": ["judge-x"], "content": ["0.5"], "score": [0.5]}
    rows = list(csv.reader((tmp_path / "mmvet_results_judge-x-cap-score-1runs.csv").read_text().splitlines()))
    assert rows[0] == ["", "rec", "ocr", "math", "know", "total", "std", "runs"]
    assert rows[1] == ["mmvet_results", "50.0", "50.0", "50.0", "0.0", "50.0", "0.0", "[50.0]"]
    assert main(["eval", "score", "--bench", "mmvet", "--answers", str(FIX / "answers/mmvet.jsonl"),
                 "--annotations", str(FIX / "mm-vet"), "--judge-model", "judge-x"]) == 2
    assert "--judge-url" in capsys.readouterr().err


def test_generated_answers_and_llava_files_meet_the_same_key():
    # what vlmsweep's generation writes for an item is what LLaVA's generator writes
    bench = get_benchmark("textvqa")
    item = bench.load_items(FIX / "textvqa")[2]
    key = bench.load_key(FIX / "textvqa")
    assert bench.answer_key(Answer.of(item, "stop", bench.answer_prompt(item))) in key
