"""Text QA, vlmsweep's text-only benchmark for the miniatures: its rule reads a reply's answer word
(first or last domain word, numbers as digits), and the world's set asks the facts the world's
text-only dialogues teach."""

from __future__ import annotations

import json
import random

import pytest

from vlmsweep.config.errors import ConfigError
from vlmsweep.data.world import questions as Q
from vlmsweep.eval.benchmarks import Answer, get_benchmark
from vlmsweep.eval.benchmarks.textqa.score import answer_word

BENCH = get_benchmark("textqa")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("textqa")
    BENCH.build_world(root, seed=0, scale=1, image_size=64)
    folder = BENCH.folder(root)
    return BENCH.load_items(folder), BENCH.folder_key(folder)


def test_the_world_set_asks_text_only_questions_the_dialogues_answer(world):
    items, key = world
    assert len(items) == 50 and all(not i.images for i in items)
    assert all(i.prompt.endswith("?") for i in items)     # no response-format prompt after it
    assert {r["kind"] for r in key.values()} == {g.__name__.removeprefix("t_") for g in Q.TEXT_FACTS}


def test_the_dialogues_own_answers_are_right_and_a_wrong_fact_is_wrong():
    for seed in range(200):
        for gen in Q.TEXT_FACTS:
            fact = gen(random.Random(seed))
            assert answer_word(fact.answer, list(fact.domain), fact.pick) == fact.key, fact
    assert answer_word("Mixing red and blue gives purple.", ["blue", "purple", "red"], "last") == "purple"
    assert answer_word("A small star is bigger than a large star.", ["large", "medium", "small"], "first") == "small"
    numbers = [str(n) for n in range(21)]
    assert answer_word("It shows five squares.", numbers, "last") == "5" == answer_word("5", numbers, "last")
    assert answer_word("A circle has no corners.", numbers, "last") == "0"
    assert answer_word("I don't know.", numbers, "last") is None


def test_scores_replies_by_their_answer_word(world):
    items, key = world
    right = [Answer.of(i, f"The answer is {key[str(i.question_id)]['answer']}.") for i in items[:10]]
    wrong = [Answer.of(i, "No idea at all.") for i in items[10:20]]
    out = BENCH.score(right + wrong, key)
    assert out["metrics"]["accuracy"] == pytest.approx(100 * 10 / 50)
    assert out["counts"]["missing"] == 30 and sum(r["correct"] for r in out["items"]) == 10


def test_a_malformed_key_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "textqa_answers.json"
    path.write_text(json.dumps({"0": {"answer": "red", "domain": ["blue"], "pick": "last"}}))
    with pytest.raises(ConfigError) as err:
        BENCH.load_key(path)
    assert "textqa_answers.json" in str(err.value) and "\n" not in str(err.value)
