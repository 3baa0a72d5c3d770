"""Chance levels (eval/chance.py): a variant's own answers shuffled among questions of one type and
scored again. A constant answerer sits exactly at chance, right answers are far above it; the eval
table, the MLflow keys and the report (table, sentence and plot titles) say which scores are above
chance. No Ray."""

from __future__ import annotations

import numpy as np
import pytest
from vlmsweep.eval.benchmarks import Answer, get_benchmark
from vlmsweep.eval.chance import SHUFFLES, above_chance, add_chance, question_type
from vlmsweep.eval.run import flat_metrics, format_table
from vlmsweep.eval.stderr import add_stderr


@pytest.fixture(scope="module")
def world_sets(tmp_path_factory):
    from vlmsweep.eval.world_sets import build_benchmarks

    root = tmp_path_factory.mktemp("bench")
    build_benchmarks(root, seed=0, size="tiny", image_size=32)
    return root


def _scored(name, root, say):
    """The benchmark's world set answered by say(k, item, gold) and scored with stderr and chance;
    gold is the item's right answer as the scorer's rows give it."""
    bench = get_benchmark(name)
    folder = bench.folder(root)
    items, key = bench.load_items(folder), bench.folder_key(folder)
    first = [Answer.of(it, "x", bench.answer_prompt(it)) for it in items]
    gold = {str(r["question_id"]) + str(r.get("split", "")): r["answer"] for r in bench.score(first, key)["items"]}
    answers = [Answer.of(it, say(k, it, gold.get(str(it.question_id) + str(it.extra.get("category", "")))),
                         bench.answer_prompt(it)) for k, it in enumerate(items)]
    return add_chance(bench, answers, key, add_stderr(name, bench.score(answers, key)))


def test_question_type_is_the_first_two_words_after_the_image_markers():
    assert question_type("<image>\nIs there a red star in the image?\nAnswer ...") == "is there"
    assert question_type("How many  sides, in all?") == "how many"
    assert question_type("<image 1> Which colour do you get?") == "which colour"
    assert question_type(None) == question_type("") == ""


@pytest.mark.parametrize("name, constant", [("pope", "Yes"), ("pope", "No"), ("mmmu", "C"), ("gqa", "diamond")])
def test_a_constant_answerer_scores_exactly_its_chance_level(world_sets, name, constant):
    scored = _scored(name, world_sets, lambda k, it, gold: constant)
    head = get_benchmark(name).metrics[0]
    assert scored["chance"][head] == pytest.approx(scored["metrics"][head])
    assert scored["chance_p"][head] == 1.0 and above_chance(scored["chance_p"][head]) is False


@pytest.mark.parametrize("name", ["pope", "gqa"])
def test_right_answers_are_above_chance_and_chance_is_what_shuffles_score(world_sets, name):
    scored = _scored(name, world_sets, lambda k, it, gold: gold)
    head = get_benchmark(name).metrics[0]
    assert scored["metrics"][head] == 100.0
    assert scored["chance"][head] < 80.0
    assert scored["chance_p"][head] == pytest.approx(1 / (SHUFFLES + 1))   # no shuffle ties the real pairing
    assert above_chance(scored["chance_p"][head]) is True
    again = _scored(name, world_sets, lambda k, it, gold: gold)
    assert again["chance"] == scored["chance"]                             # seeded: the same result twice


def test_large_sets_get_fewer_shuffles_but_enough_to_pass_the_test(world_sets, monkeypatch):
    import vlmsweep.eval.chance as chance

    assert chance.shuffles_for(1_000) == SHUFFLES and chance.shuffles_for(214_354) == 20
    monkeypatch.setattr(chance, "MAX_SCORED", 1)
    scored = _scored("gqa", world_sets, lambda k, it, gold: gold)
    assert scored["chance_shuffles"] == chance.MIN_SHUFFLES
    assert scored["chance_p"]["accuracy"] == pytest.approx(1 / 21) and above_chance(scored["chance_p"]["accuracy"])


def test_judged_or_unscored_results_get_no_chance():
    mmvet = get_benchmark("mmvet")
    assert "chance" not in add_chance(mmvet, [Answer(1, "x")], {}, {"metrics": {"total": 10.0}})
    assert "chance" not in add_chance(get_benchmark("gqa"), [], {}, {"metrics": {}, "skipped": True})


def test_mlflow_keys_and_the_eval_table_carry_the_headline_chance(world_sets):
    pope = _scored("pope", world_sets, lambda k, it, gold: "Yes")
    gqa = _scored("gqa", world_sets, lambda k, it, gold: gold)
    flat = flat_metrics({"pope": pope, "gqa": gqa})
    assert flat["pope/f1_chance"] == pytest.approx(flat["pope/f1"]) and flat["pope/f1_chance_p"] == 1.0
    assert "pope/accuracy_chance" not in flat and "gqa/binary_chance" not in flat   # headline metrics only
    assert flat["gqa/accuracy_chance_p"] < 0.05
    lines = format_table({"pope": pope, "gqa": gqa}).splitlines()
    assert "chance" in lines[0]
    row = {line.split()[0]: line for line in lines[1:] if line[:1] != " "}
    assert "not above chance (p = 1.00)" in row["pope"] and f"{pope['chance']['f1']:.2f}" in row["pope"]
    assert "above chance (p = 0.01)" in row["gqa"] and "not above" not in row["gqa"]


@pytest.fixture
def chance_sweep(tmp_path):
    """Two finished variants in MLflow: one whose GQA answers are right (above chance), one that
    answers every question alike (at chance)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    eid = client.create_experiment("vlmsweep", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(eid, tags={"vlmsweep.kind": "sweep", "vlmsweep.sweep_name": "chance",
                                          "vlmsweep.sweep_id": "c"}).info.run_id
    scores = {"good": {"metrics": {"accuracy": 90.0}, "stderr": {"accuracy": 2.0},
                       "chance": {"accuracy": 30.0}, "chance_p": {"accuracy": 1 / 101}},
              "blind": {"metrics": {"accuracy": 31.0}, "stderr": {"accuracy": 2.0},
                        "chance": {"accuracy": 31.0}, "chance_p": {"accuracy": 1.0}}}
    for name, scored in scores.items():
        vid = client.create_run(eid, run_name=name, tags={"vlmsweep.kind": "variant", "vlmsweep.sweep_id": "c",
                                                         "axis.llm": name, "mlflow.parentRunId": parent}).info.run_id
        metrics = {f"eval/{k}": v for k, v in flat_metrics({"gqa": scored}).items()}   # as the sweep logs them
        client.log_batch(vid, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
        client.set_terminated(vid, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return uri


def test_the_report_marks_scores_at_chance_in_its_table_sentence_and_plots(chance_sweep, tmp_path):
    from vlmsweep.report import build_report, load_sweep
    from vlmsweep.report.tables import AT_CHANCE, variant_grid

    grid = variant_grid(load_sweep(chance_sweep, "chance"))
    cells = {r[0]: dict(zip(grid.header, r)) for r in grid.rows}
    assert cells["blind"]["gqa"].endswith(AT_CHANCE) and AT_CHANCE not in cells["good"]["gqa"]
    sentence = next(n for n in grid.notes if "above chance" in n)
    assert sentence.startswith("1 of 2 scores are above chance")
    out = build_report(chance_sweep, "chance", tmp_path / "rep", log_artifacts=False)
    assert "1 of 2 scores are above chance" in out["markdown"].read_text()
    assert any(p.name == "bar_gqa_accuracy.png" for p in out["plots"])


def test_a_sweep_where_nothing_is_above_chance_says_so():
    from vlmsweep.report.tables import chance_summary

    import pandas as pd

    class Data:   # only what chance_summary reads: the finished variants' logged metrics
        pass

    data = Data()
    data.variants = pd.DataFrame({"variant": ["a", "b"], "status": ["FINISHED"] * 2,
                                  "eval/gqa/accuracy": [30.0, 31.0], "eval/gqa/accuracy_chance_p": [1.0, 0.4]})
    assert "No score is above chance" in chance_summary(data)
    data.variants["eval/gqa/accuracy_chance_p"] = np.nan
    assert chance_summary(data) is None   # results scored before chance levels existed
