"""The ablation report, against a sweep written straight into a throwaway sqlite MLflow store.

The fake sweep follows sweep/tracking.py's conventions: a parent sweep run; variant runs over
vision {Sig, CLIP, DINO} × llm {Llama, Phi} (DINO only with Llama, so one label has n=1); one
FAILED variant; stage runs with train/loss, where "pretrain" is one run shared by two variants
through their vlmsweep.stage.pretrain tags, and one older variant that has only child stage runs.
"""

from __future__ import annotations

import re
import statistics

import pytest

pytest.importorskip("mlflow")
pytest.importorskip("matplotlib")

from mlflow.entities import Metric  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from vlmsweep.report import build_report, load_sweep, SweepNotFound  # noqa: E402
from vlmsweep.report.tables import axis_pivots, pivot_grid, to_markdown, variant_grid  # noqa: E402

T0 = 1_700_000_000_000  # explicit start times: runs created within one millisecond must still order
SCORES = {  # variant: (vision, llm, vqav2, gqa, pope f1, mme perception)
    "sig-llama": ("Sig", "Llama", 70.0, 57.0, 85.0, 1200.0),
    "sig-phi": ("Sig", "Phi", 72.0, 57.0, 84.0, 1300.0),
    "clip-llama": ("CLIP", "Llama", 66.0, 53.0, 86.0, 1100.0),
    "clip-phi": ("CLIP", "Phi", 68.0, 54.0, 83.0, 1250.0),
    "dino-llama": ("DINO", "Llama", 60.0, 50.0, 80.0, 900.0),
}


class Store:
    def __init__(self, tmp):
        self.uri = f"sqlite:///{tmp / 'mlflow.db'}"  # tmp is absolute: sqlite://// + path
        self.client = MlflowClient(self.uri)
        self.eid = self.client.create_experiment("vlmsweep", artifact_location=(tmp / "artifacts").as_uri())
        self.clock = T0

    def run(self, name, tags, status="FINISHED", parent=None):
        self.clock += 1000
        tags = {**tags, **({"mlflow.parentRunId": parent} if parent else {})}
        run_id = self.client.create_run(self.eid, start_time=self.clock, tags=tags, run_name=name).info.run_id
        self.client.set_terminated(run_id, status, end_time=self.clock + 500)
        return run_id

    def metrics(self, run_id, values: dict, step=0):
        self.client.log_batch(run_id, metrics=[Metric(k, v, self.clock, step) for k, v in values.items()])

    def loss(self, run_id, values):
        self.client.log_batch(run_id, metrics=[Metric("train/loss", v, self.clock, s) for s, v in enumerate(values, 1)])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("report"))
    s.run("grid-a", {"vlmsweep.kind": "sweep", "vlmsweep.sweep_name": "grid-a", "vlmsweep.sweep_id": "old"})
    s.run("other-grid", {"vlmsweep.kind": "sweep", "vlmsweep.sweep_name": "other-grid", "vlmsweep.sweep_id": "o"})
    parent = s.run("grid-a", {"vlmsweep.kind": "sweep", "vlmsweep.sweep_name": "grid-a", "vlmsweep.sweep_id": "new"})
    ids, stage = {}, {}
    for name, (vision, llm, vqa, gqa, pope, mme) in SCORES.items():
        ids[name] = s.run(name, {"vlmsweep.kind": "variant", "vlmsweep.sweep_id": "new",
                                 "axis.vision": vision, "axis.llm": llm}, parent=parent)
        s.metrics(ids[name], {"eval/vqav2/accuracy": vqa, "eval/gqa/accuracy": gqa, "eval/pope/f1": pope,
                              "eval/mme/perception": mme, "eval/mme/cognition": 300.0, "finetune/final_loss": 1.0})
    bad = s.run("sig-phi-lr1e-2", {"vlmsweep.kind": "variant", "vlmsweep.sweep_id": "new", "axis.vision": "Sig",
                                   "axis.llm": "Phi", "vlmsweep.error": "RuntimeError: loss is NaN at step 3"},
                status="FAILED", parent=parent)
    ids["sig-phi-lr1e-2"] = bad
    # one pretrain run shared by sig-llama (its owner) and sig-phi; everyone else trains their own
    stage["shared"] = s.run("pretrain", {"vlmsweep.kind": "stage", "vlmsweep.stage_id": "p1"}, parent=ids["sig-llama"])
    s.loss(stage["shared"], [5.0, 4.0, 3.5, 3.2])
    for name in ("sig-llama", "sig-phi", "clip-llama", "clip-phi", "sig-phi-lr1e-2"):
        pre = stage["shared"] if name in ("sig-llama", "sig-phi") else None
        if pre is None:
            pre = s.run("pretrain", {"vlmsweep.kind": "stage", "vlmsweep.stage_id": f"p-{name}"}, parent=ids[name])
            s.loss(pre, [6.0, 5.0, float("nan")] if name == "sig-phi-lr1e-2" else [5.5, 4.5, 4.0])
        s.client.set_tag(ids[name], "vlmsweep.stage.pretrain", pre)
        if name == "sig-phi-lr1e-2":
            continue
        fine = s.run("finetune", {"vlmsweep.kind": "stage", "vlmsweep.stage_id": f"f-{name}"}, parent=ids[name])
        s.loss(fine, [2.0, 1.5, 1.0])
        ev = s.run("eval", {"vlmsweep.kind": "stage", "vlmsweep.stage_id": f"e-{name}"}, parent=ids[name])
        s.metrics(ev, {"eval/vqav2/accuracy": SCORES[name][2]})
        s.client.set_tag(ids[name], "vlmsweep.stage.finetune", fine)
        s.client.set_tag(ids[name], "vlmsweep.stage.eval", ev)
    # dino-llama predates the stage tags: its stages are found as its child runs
    own = s.run("finetune", {"vlmsweep.kind": "stage", "vlmsweep.stage_id": "f-dino"}, parent=ids["dino-llama"])
    s.loss(own, [3.0, 2.0])
    s.ids, s.stage, s.parent = ids, stage, parent
    return s


def test_load_picks_latest_of_repeated_names_and_links_shared_stages(sweep):
    data = load_sweep(sweep.uri, "grid-a")
    assert data.sweep_run_id == sweep.parent
    assert any("2 sweep runs are named 'grid-a'" in n for n in data.notes)
    assert data.axes == ["llm", "vision"]
    assert set(data.variants["variant"]) == set(SCORES) | {"sig-phi-lr1e-2"}
    row = data.variants.set_index("variant").loc["sig-phi-lr1e-2"]
    assert row["status"] == "FAILED" and "loss is NaN" in row["error"]
    # the shared stage appears under both variants, as the same run; eval (no loss) under neither
    for name in ("sig-llama", "sig-phi"):
        stages = [(c.stage, c.run_id) for c in data.curves[name]]
        assert stages[0] == ("pretrain", sweep.stage["shared"])
        assert [st for st, _ in stages] == ["pretrain", "finetune"]
    assert data.curves["sig-phi"][0].steps == [1, 2, 3, 4]
    assert data.curves["sig-phi"][0].values == [5.0, 4.0, 3.5, 3.2]
    assert [c.stage for c in data.curves["dino-llama"]] == ["finetune"]
    # by run id and by the sweep_id tag, without ambiguity
    assert load_sweep(sweep.uri, sweep.parent).notes == []
    assert load_sweep(sweep.uri, "new").sweep_run_id == sweep.parent


def test_unknown_sweep_names_the_store_and_the_existing_sweeps(sweep):
    with pytest.raises(SweepNotFound) as err:
        load_sweep(sweep.uri, "nope")
    msg = str(err.value)
    assert "'nope'" in msg and sweep.uri in msg and "grid-a" in msg and "other-grid" in msg
    with pytest.raises(SweepNotFound, match="no experiment 'elsewhere'"):
        load_sweep(sweep.uri, "grid-a", experiment="elsewhere")


def test_variant_table_values_and_best_per_column(sweep):
    grid = variant_grid(load_sweep(sweep.uri, sweep.parent))
    assert grid.header == ["variant", "llm", "vision", "vqav2", "gqa", "pope (f1)", "mme (perception)"]
    # sorted by llm, then vision; the failed variant is not in the table
    assert [r[0] for r in grid.rows] == ["clip-llama", "dino-llama", "sig-llama", "clip-phi", "sig-phi"]
    cells = {r[0]: dict(zip(grid.header, zip(r, b))) for r, b in zip(grid.rows, grid.bold)}
    assert cells["sig-phi"]["vqav2"] == ("72.0", True)
    assert cells["sig-llama"]["vqav2"] == ("70.0", False)
    assert cells["clip-llama"]["pope (f1)"] == ("86.0", True)
    assert cells["sig-phi"]["mme (perception)"] == ("1300.0", True)
    assert cells["sig-llama"]["gqa"] == cells["sig-phi"]["gqa"] == ("57.0", True)  # a tie marks both
    assert sum(b for row in grid.bold for b in row) == 5
    md = to_markdown(grid)
    assert "| sig-phi | Phi | Sig | **72.0** | **57.0** | 84.0 | **1300.0** |" in md


def test_axis_pivots_mean_and_sample_std(sweep):
    pivots = {p.axis: p for p in axis_pivots(load_sweep(sweep.uri, sweep.parent))}
    assert set(pivots) == {"llm", "vision"}
    vision = {r[0]: r for r in pivot_grid(pivots["vision"]).rows}
    # Sig: vqav2 70, 72 → 71 ± √2; CLIP: 66, 68 → 67 ± √2; DINO alone → no std
    assert vision["Sig"][:4] == ["Sig", "2", "71.0 ± 1.4", "57.0 ± 0.0"]
    assert vision["CLIP"][:5] == ["CLIP", "2", "67.0 ± 1.4", "53.5 ± 0.7", "84.5 ± 2.1"]
    assert vision["DINO"][:3] == ["DINO", "1", "60.0 ± –"]
    assert list(vision) == ["CLIP", "DINO", "Sig"]
    llama = [70.0, 66.0, 60.0]
    p = pivots["llm"]
    assert p.n["Llama"] == 3 and p.n["Phi"] == 2
    assert p.mean.at["Llama", "vqav2"] == pytest.approx(statistics.mean(llama))
    assert p.std.at["Llama", "vqav2"] == pytest.approx(statistics.stdev(llama))
    assert p.mean.at["Phi", "mme (perception)"] == pytest.approx(1275.0)
    llm = {r[0]: r for r in pivot_grid(p).rows}
    assert llm["Llama"][2] == f"{statistics.mean(llama):.1f} ± {statistics.stdev(llama):.1f}" == "65.3 ± 5.0"


def test_build_report_writes_self_contained_files_and_logs_artifacts(sweep, tmp_path):
    out = build_report(sweep.uri, "grid-a", tmp_path / "rep")
    md, page = out["markdown"].read_text(), out["html"].read_text()
    names = sorted(p.name for p in out["plots"])
    assert names == ["bar_gqa_accuracy.png", "bar_mme_perception.png", "bar_pope_f1.png",
                     "bar_vqav2_accuracy.png", "loss_finetune.png", "loss_pretrain.png"]
    for path in out["plots"]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
        from PIL import Image
        with Image.open(path) as im:
            im.verify()
    # Markdown: both kinds of table, relative image links, the failed variant with its error
    assert "| variant | llm | vision | vqav2 |" in md and "**72.0**" in md
    assert "### By vision" in md and "| Sig | 2 | **71.0 ± 1.4** |" in md
    assert "![bar_vqav2_accuracy](plots/bar_vqav2_accuracy.png)" in md
    failed = md.split("## Failed", 1)[1]
    assert "sig-phi-lr1e-2" in failed and "RuntimeError: loss is NaN at step 3" in failed
    assert "2 sweep runs are named 'grid-a'" in md
    # HTML: every image is embedded, nothing is fetched from elsewhere
    assert page.count("data:image/png;base64,") == len(out["plots"])
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    assert not re.search(r"<link|<script|url\(|https?://", page)
    assert "<td class=\"best\"><b>72.0</b></td>" in page and "sig-phi-lr1e-2" in page
    # artifacts on the parent run of the sweep that was reported
    assert out["sweep_run_id"] == sweep.parent
    logged = {a.path for a in sweep.client.list_artifacts(sweep.parent, "report")}
    assert {"report/report.md", "report/report.html", "report/plots"} <= logged
    plots = {a.path for a in sweep.client.list_artifacts(sweep.parent, "report/plots")}
    assert plots == {f"report/plots/{n}" for n in names}
    assert sorted(out["artifacts"]) == sorted(["report/report.md", "report/report.html"]
                                              + [f"report/plots/{n}" for n in names])


def test_build_report_without_logging_leaves_the_run_alone(sweep, tmp_path):
    other = sweep.run("lonely", {"vlmsweep.kind": "sweep", "vlmsweep.sweep_name": "lonely"})
    out = build_report(sweep.uri, "lonely", tmp_path, log_artifacts=False)
    assert out["artifacts"] == [] and sweep.client.list_artifacts(other) == []
    assert out["plots"] == [] and "No finished variant" in out["markdown"].read_text()


def test_report_of_an_unknown_sweep_is_one_line_and_exit_2(tmp_path, capsys):
    from vlmsweep.cli import main

    assert main(["report", "no-such-sweep", "--work-dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]   # (MLflow logs its DB set-up)
    assert len(errors) == 1 and "no-such-sweep" in errors[0] and "Traceback" not in err
