"""Where a local MLflow store puts a run's artifacts."""

from __future__ import annotations

from vlmsweep.sweep.tracking import Tracker, local_artifact_root


def test_a_local_stores_artifacts_sit_beside_its_database_not_in_the_current_folder(tmp_path, monkeypatch):
    elsewhere = tmp_path / "where-the-command-ran"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    work = tmp_path / "work"
    tracker = Tracker(f"sqlite:///{work / 'mlflow.db'}")
    run = tracker.client.create_run(tracker.experiment_id).info.run_id
    tracker.log_text(run, "sweep smoke: 4 variants", "plan.txt")
    [saved] = (work / "mlartifacts").rglob("plan.txt")
    assert saved.read_text() == "sweep smoke: 4 variants"
    assert list(elsewhere.iterdir()) == []          # MLflow's default was ./mlruns here
    assert Tracker(f"sqlite:///{work / 'mlflow.db'}").experiment_id == tracker.experiment_id
    assert local_artifact_root("http://127.0.0.1:5000") is None    # a server keeps its own store
