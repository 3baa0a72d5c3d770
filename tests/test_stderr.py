"""Error bars: each benchmark score's standard error (analytic for proportions, seeded item
bootstrap for composites, MME acc+ resampling images), paired differences between variants,
`vlmsweep eval`'s table, and the report's ± / beyond-noise marks and seed spread. No Ray."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from vlmsweep.eval.run import flat_metrics, format_table
from vlmsweep.eval.stderr import (
    add_stderr,
    bootstrap_stderr,
    exceeds_noise,
    item_key,
    item_values,
    mean_stderr,
    paired_stderr,
    proportion_stderr,
    stderr_metrics,
)


def _items(correct, **extra):
    return [{"question_id": i, "prediction": "", "parsed": "", "answer": "", "correct": c, **extra}
            for i, c in enumerate(correct)]


# ---- single scores ----------------------------------------------------------------------------

def test_analytic_stderr_of_a_known_proportion():
    assert proportion_stderr(50.0, 100) == pytest.approx(5.0)                    # 100 * sqrt(.25 / 100)
    assert mean_stderr([1] * 30 + [0] * 70) == pytest.approx(100 * math.sqrt(0.3 * 0.7 / 100))
    assert proportion_stderr(0.5, 100, scale=1.0) == pytest.approx(0.05)         # POPE's yes_ratio is 0..1
    assert mean_stderr([]) == 0.0 and proportion_stderr(100.0, 10) == 0.0
    soft = [0.0, 0.3, 0.6, 1.0, 1.0, 0.6]                                        # VQA soft accuracy: the SEM
    assert mean_stderr(soft) == pytest.approx(100 * np.std(soft, ddof=1) / math.sqrt(len(soft)))
    scored = {"metrics": {"accuracy": 30.0}, "items": _items([1] * 30 + [0] * 70)}
    add_stderr("textvqa", scored)
    assert scored["stderr"]["accuracy"] == pytest.approx(100 * math.sqrt(0.21 / 100))
    assert scored["metrics"] == {"accuracy": 30.0}                    # the official numbers, untouched
    assert flat_metrics({"textvqa": scored}) == {"textvqa/accuracy": 30.0,
                                                 "textvqa/accuracy_stderr": scored["stderr"]["accuracy"]}


def test_bootstrap_is_deterministic_and_matches_the_analytic_proportion():
    x = np.random.default_rng(1).random(400) < 0.3
    stat = lambda idx: 100 * x[idx[0]].mean(axis=1)
    first, again = bootstrap_stderr([len(x)], stat), bootstrap_stderr([len(x)], stat)
    assert first == again
    analytic = proportion_stderr(100 * x.mean(), len(x))
    assert first == pytest.approx(analytic, rel=0.1)
    assert bootstrap_stderr([len(x)], stat, seed=7) != first   # the seed is what makes it repeat


def test_pope_composites_are_bootstrapped_by_split_and_repeat():
    rng = np.random.default_rng(0)
    items = []
    for split in ("random", "popular", "adversarial"):
        for i in range(150):
            label = "yes" if i % 2 else "no"
            said = label if rng.random() < 0.8 else ("no" if label == "yes" else "yes")
            items.append({"question_id": f"{split}{i}", "parsed": said, "answer": label, "correct": said == label,
                          "split": split})
    names = ("f1", "accuracy", "precision", "recall", "yes_ratio")
    metrics = {m: 50.0 for m in names} | {f"{s}/{m}": 50.0 for s in ("random", "popular", "adversarial") for m in names}
    se = stderr_metrics("pope", {"metrics": metrics, "items": items})
    assert set(se) == set(metrics)
    assert se == stderr_metrics("pope", {"metrics": metrics, "items": items})
    acc = [np.mean([r["correct"] for r in items if r["split"] == s]) for s in ("random", "popular", "adversarial")]
    assert se["random/accuracy"] == pytest.approx(proportion_stderr(100 * acc[0], 150))
    assert se["accuracy"] == pytest.approx(math.sqrt(sum(proportion_stderr(100 * a, 150) ** 2 for a in acc)) / 3)
    assert 1.0 < se["f1"] < 5.0 and se["f1"] < se["random/f1"]   # the mean over 3 splits is tighter


def test_mme_acc_plus_resamples_images_not_questions():
    # 100 images x 2 questions, each image's two answers both right or both wrong: acc+ is a
    # proportion over 100 images, not 200 questions
    rng = np.random.default_rng(3)
    right = rng.random(100) < 0.6
    items = [{"question_id": f"existence/{i}.png", "question": f"q{j}", "parsed": "yes", "answer": "yes",
              "correct": bool(right[i]), "subtask": "existence"} for i in range(100) for j in range(2)]
    p = 100 * right.mean()
    metrics = {"perception": 2 * p, "existence": 2 * p, "existence/acc": p, "existence/acc+": p}
    se = stderr_metrics("mme", {"metrics": metrics, "items": items})
    by_image = proportion_stderr(p, 100)
    assert se["existence/acc+"] == pytest.approx(by_image, rel=0.12)
    assert se["existence/acc+"] > 1.25 * proportion_stderr(p, 200)           # what question-level would say
    assert se["existence/acc"] == pytest.approx(proportion_stderr(p, 200))     # acc: analytic over questions
    assert se["existence"] == pytest.approx(2 * se["existence/acc+"], rel=0.05)  # acc and acc+ move together here
    assert se["perception"] == pytest.approx(se["existence"])
    assert len({item_key(i) for i in items}) == 200                             # two questions per image


def test_every_world_benchmark_score_gets_a_stderr(tmp_path):
    from vlmsweep.eval.benchmarks import WORLD_BENCHMARKS, Answer, get_benchmark
    from vlmsweep.eval.world_sets import build_benchmarks

    build_benchmarks(tmp_path, seed=0, size="tiny", image_size=32)
    for name in WORLD_BENCHMARKS:
        bench = get_benchmark(name)
        folder = bench.folder(tmp_path)
        items = bench.load_items(folder)
        answers = [Answer.of(it, ("Yes" if k % 3 else "No"), bench.answer_prompt(it)) for k, it in enumerate(items)]
        scored = add_stderr(name, bench.score(answers, bench.folder_key(folder)))
        missing = set(scored["metrics"]) - set(scored["stderr"])
        # VQAv2's rows do not carry the answer type, so its per-type scores have none
        assert missing == ({"yes/no", "number", "other"} & set(scored["metrics"]) if name == "vqav2" else set()), name
        assert all(v >= 0 and math.isfinite(v) for v in scored["stderr"].values()), name
        assert scored["stderr"] == add_stderr(name, bench.score(answers, bench.folder_key(folder)))["stderr"]


def test_skipped_or_itemless_results_get_no_stderr():
    assert stderr_metrics("vqav2", {"metrics": {}, "items": [], "skipped": True}) == {}
    assert stderr_metrics("gqa", {"metrics": {"accuracy": 0.0}, "items": []}) == {}


def test_eval_table_prints_score_plus_minus_stderr():
    scored = add_stderr("gqa", {"metrics": {"accuracy": 50.0, "binary": 50.0, "open": 50.0},
                                "items": _items([1, 0] * 50, structural="query"), "counts": {"answered": 100}})
    table = format_table({"gqa": scored, "mmvet": {"metrics": {}, "skipped": True, "notes": ["needs a judge"]}})
    assert "50.00 ± 5.00" in table.splitlines()[1]
    assert "± stderr" in table.splitlines()[0] and "needs a judge" in table


# ---- differences ------------------------------------------------------------------------------

def test_paired_difference_beyond_and_within_noise():
    rng = np.random.default_rng(5)
    a = rng.random(400) < 0.6
    b = a.copy()
    b[np.flatnonzero(a)[:25]] = False                   # b loses 25 questions a gets right: 6.25 points
    va, vb = ({str(i): 100.0 * v for i, v in enumerate(x)} for x in (a, b))
    diff, se, n = paired_stderr(vb, va)
    assert (n, diff) == (400, pytest.approx(-6.25))
    assert exceeds_noise(diff, se)
    # unpaired, the same 6.25 points would look like noise: pairing is what makes it visible
    unpaired = math.hypot(mean_stderr(a), mean_stderr(b))
    assert not exceeds_noise(diff, unpaired)
    c = a.copy()                                         # c swaps 20 questions each way: a wash
    c[np.flatnonzero(a)[:20]] = False
    c[np.flatnonzero(~a)[:22]] = True
    diff, se, _ = paired_stderr({str(i): 100.0 * v for i, v in enumerate(c)}, va)
    assert diff == pytest.approx(0.5) and exceeds_noise(diff, se) is False
    assert exceeds_noise(1.0, float("nan")) is None
    assert item_values("pope", "f1", _items([1])) is None        # composites are not item means
    assert item_values("gqa", "accuracy", _items([1, 0])) == {"0": 100.0, "1": 0.0}


# ---- the report -------------------------------------------------------------------------------

@pytest.fixture
def noisy_sweep(tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("matplotlib")
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    eid = client.create_experiment("vlmsweep", artifact_location=(tmp_path / "artifacts").as_uri())
    clock = [1_700_000_000_000]

    def run(name, tags, parent=None):
        clock[0] += 1000
        tags = {**tags, **({"mlflow.parentRunId": parent} if parent else {})}
        run_id = client.create_run(eid, start_time=clock[0], tags=tags, run_name=name).info.run_id
        client.set_terminated(run_id, "FINISHED", end_time=clock[0] + 500)
        return run_id

    parent = run("noisy", {"vlmsweep.kind": "sweep", "vlmsweep.sweep_name": "noisy", "vlmsweep.sweep_id": "n"})
    base = np.random.default_rng(11).random(400) < 0.6
    right = {"b-1": base.copy(), "b-2": base.copy(), "a-1": base.copy(), "a-2": base.copy()}
    right["b-2"][np.flatnonzero(base)[:3]] = False                 # 0.75 points below: noise
    right["a-2"][np.flatnonzero(base)[-3:]] = False                # the same, on other questions
    right["a-1"][np.flatnonzero(base)[:60]] = False                # 15 points below: beyond noise
    pope = {"b-1": 80.0, "b-2": 81.0, "a-1": 70.0, "a-2": 79.0}    # unpaired, stderr 1 each
    for name, correct in right.items():
        llm, seed = name.split("-")
        vid = run(name, {"vlmsweep.kind": "variant", "vlmsweep.sweep_id": "n", "axis.llm": llm.upper(),
                         "axis.seed": seed}, parent)
        scored = add_stderr("gqa", {"metrics": {"accuracy": 100 * correct.mean()},
                                    "items": _items([bool(c) for c in correct], structural="query")})
        out = tmp_path / "work" / name / "eval"
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({"gqa": scored}))
        metrics = {f"eval/{k}": v for k, v in flat_metrics({"gqa": scored}).items()}   # as the sweep logs them
        metrics.update({"eval/pope/f1": pope[name], "eval/pope/f1_stderr": 1.0})
        client.log_batch(vid, metrics=[Metric(k, v, clock[0], 0) for k, v in metrics.items()])
        ev = run("eval", {"vlmsweep.kind": "stage", "vlmsweep.stage_id": f"e-{name}", "vlmsweep.output": str(out)},
                 vid)
        client.set_tag(vid, "vlmsweep.stage.eval", ev)
    return uri


def test_report_shows_stderr_noise_marks_and_seed_spread(noisy_sweep, tmp_path):
    from vlmsweep.report import build_report, load_sweep
    from vlmsweep.report.tables import comparisons, variant_grid

    data = load_sweep(noisy_sweep, "noisy")
    assert set(data.items) == {"a-1", "a-2", "b-1", "b-2"}           # per-item results read from the eval output
    comps = {(c.column, c.variant): c for c in comparisons(data)}
    assert comps[("gqa", "b-2")].paired and comps[("gqa", "b-2")].beyond is False
    assert comps[("gqa", "a-1")].paired and comps[("gqa", "a-1")].beyond is True
    assert comps[("gqa", "a-2")].paired and comps[("gqa", "a-2")].beyond is False
    assert comps[("pope (f1)", "a-1")].beyond and not comps[("pope (f1)", "b-1")].paired
    assert comps[("pope (f1)", "a-2")].beyond is False                # 2 points, sqrt(2) stderr: noise

    grid = variant_grid(data)
    cells = {r[0]: dict(zip(grid.header, r)) for r in grid.rows}
    b1 = 100 * (np.random.default_rng(11).random(400) < 0.6).mean()
    assert cells["b-1"]["gqa"] == f"{b1:.1f} ± {proportion_stderr(b1, 400):.1f}"   # the best: no mark
    assert cells["a-1"]["gqa"].endswith(" †") and cells["b-2"]["gqa"].endswith(" ≈")
    assert cells["a-1"]["pope (f1)"] == "70.0 ± 1.0 †" and cells["b-1"]["pope (f1)"] == "80.0 ± 1.0 ≈"

    out = build_report(noisy_sweep, "noisy", tmp_path / "rep", log_artifacts=False)
    md, page = out["markdown"].read_text(), out["html"].read_text()
    for text in (md, page):
        assert "2 of 6 differences from the best variant of each benchmark exceed the noise" in text
        assert "paired over the same questions for 3 of them" in text
        assert "Most differences are within noise" in text
        assert "Seed spread (mean ± std over seed)" in text
    seed_rows = md.split("Seed spread", 1)[1].split("###", 1)[0]
    assert "| B | 2 | **63.1 ± 0.5** | **80.5 ± 0.7** |" in seed_rows    # llm B over seeds 1 and 2: the best
    assert "| A | 2 | 55.6 ± 10.1 ≈ | 74.5 ± 6.4 ≈ |" in seed_rows      # two seeds that disagree: within noise
    assert ("Does the llm matter beyond seed noise? 0 of 2 differences from the best llm of each benchmark "
            "exceed the seed noise: no difference exceeds it") in seed_rows
    assert page.count("†") >= 2 and "≈" in page


def test_seed_verdicts_weigh_a_difference_against_the_spread_over_seeds():
    from vlmsweep.report.tables import BEYOND, WITHIN, seed_verdicts

    groups = [{"x": pd.Series([10.0, 11.0, 12.0])},    # 20 points below the best, seeds agree: beyond
              {"x": pd.Series([30.0, 31.0, 29.0])},    # the best
              {"x": pd.Series([29.0, 35.0, 15.0])},    # 3 points below, seeds disagree: within
              {"x": pd.Series([5.0])}]                 # one seed: no spread to compare
    assert seed_verdicts(groups, ["x"]) == [{"x": BEYOND}, {"x": "best"}, {"x": WITHIN}, {}]
    flat = [{"x": pd.Series([2.0, 2.0])}, {"x": pd.Series([3.0, 3.0])}, {"x": pd.Series([3.0, 3.0])}]
    assert seed_verdicts(flat, ["x"]) == [{"x": BEYOND}, {"x": "best"}, {"x": WITHIN}]   # no spread at all
