"""report layer of vlmsweep: read a finished (or failed) sweep from MLflow and write its ablation report.

Sits above sweep: it reads what sweep/tracking.py wrote, through MLflow only, and imports nothing
from vlmsweep.sweep (see collect.py for the tag names it relies on).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .collect import EXPERIMENT, Curve, SweepData, SweepNotFound, load_sweep
from .render import write_report

ARTIFACT_DIR = "report"

__all__ = ["build_report", "load_sweep", "write_report", "SweepData", "SweepNotFound", "Curve", "ARTIFACT_DIR"]


def build_report(tracking_uri: str, sweep: str, out_dir, log_artifacts: bool = True,
                 experiment: str = EXPERIMENT, templates: Path | str | None = None, work_dir: str | None = None) -> dict:
    """Collect SWEEP (a sweep name or sweep run id), write the report to OUT_DIR and, if
    LOG_ARTIFACTS, attach report.md, report.html and the plots to the sweep's parent run under
    report/ (plots under report/plots/, so the Markdown's relative image links still resolve there).

    Returns write_report's paths plus "sweep_run_id", "notes", "artifacts" (the artifact
    paths logged, empty when LOG_ARTIFACTS is false) and "view": with LOG_ARTIFACTS, the MLflow
    UI view of the sweep's variants side by side, saved in the experiment (browse.py), else None.
    """
    data = load_sweep(tracking_uri, sweep, experiment=experiment, work_dir=work_dir)
    paths = write_report(data, out_dir, templates=templates)
    logged = []
    if log_artifacts:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        for path in (paths["markdown"], paths["html"]):
            client.log_artifact(data.sweep_run_id, str(path), artifact_path=ARTIFACT_DIR)
            logged.append(f"{ARTIFACT_DIR}/{path.name}")
        for path in paths["plots"]:
            client.log_artifact(data.sweep_run_id, str(path), artifact_path=f"{ARTIFACT_DIR}/plots")
            logged.append(f"{ARTIFACT_DIR}/plots/{path.name}")
    view = _save_view(data) if log_artifacts else None
    return {**paths, "sweep_run_id": data.sweep_run_id, "notes": list(data.notes), "artifacts": logged,
            "view": view}


def _save_view(data: SweepData):
    """The sweep's MLflow view, or None: a store that refuses the tag costs the link, not the report."""
    from .browse import save_view

    try:
        return save_view(data)
    except Exception as err:  # noqa: BLE001  (MlflowException, a server's permission error, ...)
        logging.getLogger(__name__).warning("no MLflow view of the sweep: %s", str(err).splitlines()[0])
        return None
