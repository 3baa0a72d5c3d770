"""MLflow conventions — the only module that writes MLflow keys.

    variant run   params: the resolved config flattened (model.vision.family, …), tags axis.*,
                  artifacts: config.yaml; metrics: final losses, tokens/s, wall time
      stage runs  nested (mlflow.parentRunId), params: the stage config; metrics per step:
                  loss, lr, tokens_per_s (real, non-pad), real_token_fraction; summary
                  metrics: final_loss, wall_s, data/skipped/<reason>; artifacts: manifest,
                  skipped samples, resolved config
Runs end FINISHED or FAILED (KILLED on Ctrl-C), never RUNNING: every run is a context manager.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

EXPERIMENT = "vlmsweep"
MAX_PARAM = 6000  # MLflow's limit on a param value


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested config → {"a.b.c": "value"} with stable names (lists as JSON)."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
            # named items (recipe stages) by name, so a param means the same thing in every run
            for item in value:
                out.update(flatten({k: v for k, v in item.items() if k != "name"}, f"{name}.{item['name']}."))
        elif isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            out[name] = text[:MAX_PARAM]
    return out


def metric_key(name: str) -> str:
    """MLflow allows alphanumerics, _ - . space : / in names; MME's "acc+" becomes "acc_plus"."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("+", "_plus"))


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("vlmsweep", "torch", "transformers", "ray", "deepspeed", "peft"):
        try:
            out[f"version.{pkg}"] = version(pkg)
        except Exception:
            out[f"version.{pkg}"] = "unknown"
    return out


class MetricsSink:
    """Per-step metrics from the rank-0 worker into a stage run. Picklable: Ray ships it to the worker."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri, self.run_id = tracking_uri, run_id

    def log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        now = int(time.time() * 1000)
        batch = [Metric(f"train/{k}", float(v), now, step) for k, v in metrics.items() if k != "step"]
        MlflowClient(self.tracking_uri).log_batch(self.run_id, metrics=batch)


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str = EXPERIMENT):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)

    @contextmanager
    def run(self, name: str, parent: str | None = None, tags: dict | None = None):
        tags = {**(tags or {}), "mlflow.runName": name, "vlmsweep.git_sha": _git_sha(), **_versions()}
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        run_id = run.info.run_id
        try:
            yield run_id
        except KeyboardInterrupt:
            self.client.set_terminated(run_id, "KILLED")
            raise
        except BaseException as err:
            self.client.set_tag(run_id, "vlmsweep.error", f"{type(err).__name__}: {err}"[:5000])
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")

    def variant_run(self, cfg, axes: dict | None = None):
        return self.run(cfg.name, tags={"vlmsweep.kind": "variant", **{f"axis.{k}": str(v) for k, v in (axes or {}).items()}})

    def log_variant_config(self, run_id: str, cfg, resolved_yaml: str) -> None:
        self._log_params(run_id, flatten(cfg.model_dump(mode="json")))
        self._log_text(run_id, resolved_yaml, "config.yaml")

    def stage_run(self, parent: str, stage_name: str, stage_id: str):
        return self.run(f"{stage_name}", parent=parent, tags={"vlmsweep.kind": "stage", "vlmsweep.stage_id": stage_id})

    def log_stage_config(self, run_id: str, stage_cfg) -> None:
        self._log_params(run_id, flatten(stage_cfg.model_dump(mode="json")))

    def sink(self, run_id: str) -> MetricsSink:
        return MetricsSink(self.uri, run_id)

    def log_stage_result(self, run_id: str, variant_run: str, stage_name: str, result, out_dir: str) -> None:
        s = result.summary
        metrics = {k: s[k] for k in ("final_loss", "first_loss", "wall_s", "tokens_per_s", "steps", "truncated")
                   if isinstance(s.get(k), (int, float))}
        metrics.update({f"data/skipped/{reason}": n for reason, n in (s.get("skipped") or {}).items()})
        for row in s.get("tuning") or []:  # exactly what trained, per component
            metrics[f"params/{row['component']}/trainable"] = row["trainable"]
            metrics[f"params/{row['component']}/total"] = row["total"]
            self.client.set_tag(run_id, f"tune.{row['component']}", row["mode"])
        for k, v in metrics.items():
            self.client.log_metric(run_id, f"stage/{k}", float(v))
            self.client.log_metric(variant_run, f"{stage_name}/{k}", float(v))
        self.client.set_tag(run_id, "vlmsweep.reused", str(result.reused))
        self.client.set_tag(run_id, "vlmsweep.output", out_dir)
        for name in ("manifest.json", "skipped.json", "config.yaml"):
            if (Path(out_dir) / name).is_file():
                self.client.log_artifact(run_id, str(Path(out_dir) / name))

    def log_eval(self, run_id: str, variant_run: str, metrics: dict[str, float], out_dir: str, reused: bool) -> None:
        """Benchmark scores as eval/<bench>/<metric>, on the eval run and on the variant run."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(f"eval/{k}"), v, now, 0) for k, v in sorted(metrics.items())]
        for run in (run_id, variant_run):
            for i in range(0, len(batch), 500):
                self.client.log_batch(run, metrics=batch[i:i + 500])
        self.client.set_tag(run_id, "vlmsweep.reused", str(reused))
        for path in sorted(Path(out_dir).glob("*.json")):
            self.client.log_artifact(run_id, str(path), artifact_path="eval")

    def _log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[i:i + 100])

    def _log_text(self, run_id: str, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, name)
            Path(path).write_text(text)
            self.client.log_artifact(run_id, path)
