"""`vlmsweep report SWEEP` prints an MLflow link that opens on the sweep's variants side by side.

A small sweep is written into a work dir's sqlite store the way sweep/tracking.py writes one
(a sweep run, its variant runs with axis.* tags and eval/* metrics, stage runs under them),
next to another sweep's variants and an earlier attempt of a re-run variant. The report's
link is opened in a real browser (Debian's chromium, driven by Playwright) on `mlflow server`
started here on 127.0.0.1: the runs table must list exactly this sweep's variants, one row
each, with its axes and headline scores in the columns, axes first.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from vlmsweep.report.browse import LOCAL_UI, SHARED_VIEW, ui_base

CHROMIUM = "/usr/bin/chromium"   # Debian's (`make system-deps`); Playwright's own download is not used
T0 = 1_700_000_000_000
# variant: (vision, llm, vqav2 accuracy, pope f1, status)
VARIANTS = {
    "sig-llama": ("Sig", "Llama", 61.5, 80.25, "FINISHED"),
    "sig-phi": ("Sig", "Phi", 64.0, 82.75, "FINISHED"),
    "clip-llama": ("CLIP", "Llama", 58.5, 84.5, "FINISHED"),
    "clip-phi": ("CLIP", "Phi", 66.25, 79.0, "FINISHED"),
    "clip-phi-lr": ("CLIP", "Phi", 12.5, 40.0, "FAILED"),
}
AXIS_COLS = ["tags.`axis.llm`", "tags.`axis.vision`"]
# the report's headline order, then the stderrs and chance levels where logged (VQAv2's here)
SCORE_COLS = ["metrics.`eval/vqav2/accuracy`", "metrics.`eval/pope/f1`", "metrics.`eval/vqav2/accuracy_stderr`",
              "metrics.`eval/vqav2/accuracy_chance`"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_sweep(uri: str, artifacts: Path, work_uri: str) -> dict:
    client = MlflowClient(uri)
    eid = client.create_experiment("vlmsweep", artifact_location=artifacts.as_uri())
    clock = iter(range(T0, T0 + 10**9, 1000))

    def run(name, tags, status="FINISHED", metrics=None):
        run_id = client.create_run(eid, start_time=next(clock), run_name=name, tags=tags).info.run_id
        if metrics:
            client.log_batch(run_id, metrics=[Metric(k, v, T0, 0) for k, v in metrics.items()])
        client.set_terminated(run_id, status)
        return run_id

    def sweep(name, sweep_id):
        return run(name, {"vlmsweep.kind": "sweep", "vlmsweep.sweep_name": name, "vlmsweep.sweep_id": sweep_id,
                          "vlmsweep.work_dir": work_uri})

    other = sweep("other", "o")
    run("sig-llama", {"vlmsweep.kind": "variant", "mlflow.parentRunId": other, "axis.vision": "Sig",
                      "axis.llm": "Llama"}, metrics={"eval/vqav2/accuracy": 99.0})
    parent = sweep("grid", "g")
    ids = {}
    for name, (vision, llm, vqa, pope, status) in VARIANTS.items():
        tags = {"vlmsweep.kind": "variant", "mlflow.parentRunId": parent, "vlmsweep.sweep_id": "g",
                "axis.vision": vision, "axis.llm": llm}
        if name == "sig-phi":   # an earlier attempt of this variant, replaced by the one below
            run(name, tags, "FAILED", {"eval/vqav2/accuracy": 1.0})
        ids[name] = run(name, tags, status, {"eval/vqav2/accuracy": vqa, "eval/vqav2/accuracy_stderr": 2.5,
                                             "eval/vqav2/accuracy_chance": 30.0, "eval/pope/f1": pope,
                                             "finetune/final_loss": 1.25})
        stage = run("finetune", {"vlmsweep.kind": "stage", "mlflow.parentRunId": ids[name]},
                    metrics={"stage/final_loss": 1.25})
        client.set_tag(ids[name], "vlmsweep.stage.finetune", stage)
    return {"eid": eid, "parent": parent, "ids": ids}


def start_mlflow(uri: str, port: int, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}   # no job runner: starts faster
    return subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=cwd, env=env,
                            stdout=open(cwd / "mlflow-server.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)   # its own process group: uvicorn's worker goes with it


def wait_up(server: subprocess.Popen, base: str, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode}")
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"mlflow server not up at {base} after {timeout}s")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def runs_table(page) -> tuple[list[str], list[dict[str, str]]]:
    """(column ids in display order, the rows top to bottom as {column id: cell text}); the grid
    splits each row over a pinned part and a scrolling part, joined here by row index."""
    columns = page.eval_on_selector_all(".ag-header-cell[col-id]", "els => els.map(e => e.getAttribute('col-id'))")
    cells = page.eval_on_selector_all(".ag-row[row-index] .ag-cell[col-id]", """els => els.map(e => [
        e.closest('.ag-row').getAttribute('row-index'), e.getAttribute('col-id'),
        (e.querySelector('a') || e).innerText.trim()])""")   # a run name: its link, not the colour swatch
    rows = {}
    for index, col, text in cells:
        rows.setdefault(int(index), {})[col] = text
    return columns, [rows[i] for i in sorted(rows)]


def test_ui_base_of_each_kind_of_store():
    assert ui_base("http://mlflow.lab:5000/") == ("http://mlflow.lab:5000", None)
    assert ui_base("sqlite:////w/mlflow.db") == (LOCAL_UI, "mlflow ui --backend-store-uri sqlite:////w/mlflow.db")
    assert ui_base("databricks") == (None, None)


def test_report_link_opens_the_sweeps_variants_side_by_side(tmp_path, monkeypatch, capsys):
    from playwright.sync_api import expect, sync_playwright

    from vlmsweep.cli import main
    from vlmsweep.config.workdir import WorkDir

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = WorkDir.at(tmp_path / "work")
    sweep = write_sweep(work.tracking_uri, tmp_path / "artifacts", work.uri)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_mlflow(work.tracking_uri, port, tmp_path)   # starts while the report is written
    try:
        assert main(["report", "grid", "--work-dir", work.uri]) == 0
        out = capsys.readouterr().out
        link = re.search(r"^browse: (\S+)$", out, re.MULTILINE).group(1)
        key = f"vlmsweep-{sweep['parent']}"
        assert link == f"{LOCAL_UI}/#/experiments/{sweep['eid']}/runs?viewStateShareKey={key}"
        assert f"(start the UI first: mlflow ui --backend-store-uri {work.tracking_uri})" in out
        tags = MlflowClient(work.tracking_uri).get_experiment(sweep["eid"]).tags
        assert SHARED_VIEW + key in tags   # the saved view, an experiment tag

        wait_up(server, base)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 900})
                page.goto(link.replace(LOCAL_UI, base))
                page.get_by_text(f"{len(VARIANTS)} matching runs").wait_for(timeout=60_000)
                page.locator(".ag-row[row-index] .ag-cell[col-id='metrics.`eval/pope/f1`']").nth(
                    len(VARIANTS) - 1).wait_for(timeout=30_000)
                columns, rows = runs_table(page)
                # the view is a saved one, listed (and shown as open) in the page's Views menu
                expect(page.get_by_test_id("saved-views-trigger")).to_contain_text(
                    f"sweep grid ({sweep['parent'][:8]})", timeout=15_000)
            finally:
                browser.close()
    finally:
        stop(server)

    # the axes and the headline scores, and no other metric, tag or param (the view also asks for the
    # axes first, which MLflow's UI skips when the view's state arrives after its grid is set up)
    assert sorted(c for c in columns if c.startswith(("metrics.", "tags.", "params."))) == \
        sorted(AXIS_COLS + SCORE_COLS), columns
    names = [row["attributes.`Run Name`"] for row in rows]
    assert sorted(names) == sorted(VARIANTS)          # this sweep's variants only, latest attempts, no stages
    for row in rows:
        vision, llm, vqa, pope, _ = VARIANTS[row["attributes.`Run Name`"]]
        assert (row["tags.`axis.vision`"], row["tags.`axis.llm`"]) == (vision, llm)
        assert float(row["metrics.`eval/vqav2/accuracy`"]) == vqa and float(row["metrics.`eval/pope/f1`"]) == pope
        assert float(row["metrics.`eval/vqav2/accuracy_stderr`"]) == 2.5
        assert float(row["metrics.`eval/vqav2/accuracy_chance`"]) == 30.0
    assert names == sorted(VARIANTS, key=lambda n: -VARIANTS[n][2])   # best first on the first headline score
