"""A grid on Ray Tune: driver killed mid-sweep then resumed, shared stage run once, NaN stage
failing only its own variant. Tiny stages (32 px, 3 steps, 1 worker) keep it to a few minutes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from vlmsweep.config.grid import load_grid
from vlmsweep.config.workdir import WorkDir
from vlmsweep.sweep.plan import make_plan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "grid.yaml"
    path.write_text(textwrap.dedent(f"""
        name: resume-test
        base: {ROOT / 'experiments/smoke/variant.yaml'}
        variant:
          data: {{synthetic: {{image_size: 32}}}}
          training: {{steps: 3, global_batch: 2, micro_batch: 1, workers: 1, cpus_per_worker: 1, max_length: 384,
                      checkpoint_every: 2}}
          eval: {{benchmarks: []}}
        naming: "{{recipe}}"
        axes:
          recipe:
            - base
            - {{label: share, name: share, stages: {{share_pretrain: {{vision: {{mode: partial, from_layer: 1}}}}}}}}
            # a learning rate that overflows: the stage must fail with the reason, alone
            - {{label: nan, name: single_stage, stages: {{finetune: {{training: {{lr: 1.0e+30}}}}}}}}
    """))
    return path


def test_killed_driver_resumes_without_rerunning_or_duplicating(grid_file, tmp_path):
    from mlflow.tracking import MlflowClient

    from vlmsweep.sweep.runner import run_sweep

    work = WorkDir.at(tmp_path / "work")
    plan = make_plan(load_grid(grid_file), work)
    pretrain = next(s for s in plan.stages.values() if s.name == "pretrain")
    assert pretrain.variants == ["base", "share"]

    env = {**os.environ, "VLMSWEEP_WORK_DIR": work.uri, "MLFLOW_TRACKING_URI": work.tracking_uri}
    log = tmp_path / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "vlmsweep.cli", "sweep", str(grid_file), "--retries", "0"],
                                  env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while not (Path(pretrain.out_dir) / "manifest.json").exists():
        assert driver.poll() is None, "the sweep ended before it could be interrupted"
        assert time.time() < deadline, "the first stage did not finish in time"
        time.sleep(1)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local Ray cluster, mid-sweep
    driver.wait()
    time.sleep(3)
    # what the sweep's user read: each line a stage printed once (Ray Train's print patch
    # doubled them), none of the embedded cluster's State API warnings (one a second), no
    # progress bars, and not Ray Train's INFO lines (two per rank for each checkpoint)
    printed = log.read_text()
    assert printed.count("[pretrain] what trains:") == 1, printed[-3000:]
    assert "Reporting training result" not in printed and "Checkpoint successfully created" not in printed
    assert "Failed to query Ray Train Controller" not in printed
    assert "Loading weights" not in printed and "it/s]" not in printed
    assert "FutureWarning" not in printed, printed[-3000:]

    os.environ["MLFLOW_TRACKING_URI"] = work.tracking_uri
    try:
        result = run_sweep(load_grid(grid_file), work, resume=True, retries=0, log=lambda *_: None)
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]

    assert pretrain.id in result.reused and pretrain.id not in result.ran
    assert result.variants["base"] == "FINISHED" and result.variants["share"] == "FINISHED"
    assert result.variants["nan"].startswith("FAILED") and "not finite" in result.variants["nan"]

    client = MlflowClient(work.tracking_uri)
    exp = client.get_experiment_by_name("vlmsweep").experiment_id
    sweeps = client.search_runs([exp], "tags.`vlmsweep.kind` = 'sweep'")
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    variants = client.search_runs([exp], "tags.`vlmsweep.kind` = 'variant'")
    assert Counter(r.info.run_name for r in variants) == {"base": 1, "share": 1, "nan": 1}
    status = {r.info.run_name: r.info.status for r in variants}
    assert status == {"base": "FINISHED", "share": "FINISHED", "nan": "FAILED"}
    stages = client.search_runs([exp], "tags.`vlmsweep.kind` = 'stage'")
    finished = Counter(r.data.tags["vlmsweep.stage_id"] for r in stages if r.info.status == "FINISHED")
    assert all(n == 1 for n in finished.values()), finished        # no stage ran (or was recorded) twice
    assert not [r for r in stages if r.info.status == "RUNNING"]    # nothing left RUNNING
    # the shared pretrain is one run, linked from both variants
    by_name = {r.info.run_name: r for r in variants}
    assert by_name["base"].data.tags["vlmsweep.stage.pretrain"] == by_name["share"].data.tags["vlmsweep.stage.pretrain"]
    assert "cost/cpu_hours" in by_name["base"].data.metrics
