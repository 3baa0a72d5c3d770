"""MLflow conventions — the only module that writes MLflow keys.

    sweep run     tags vlmsweep.kind=sweep, vlmsweep.sweep_name, vlmsweep.sweep_id, vlmsweep.work_dir; artifacts: the
                  grid YAML, plan.txt, the report; metrics sweep/wall_s, stages_run, stages_reused
      variant     one child per variant (found again on --resume): tags axis.<axis>, vlmsweep.stage.<name>
                  = the stage run it used; params: the resolved config flattened with stable names;
                  metrics: <stage>/final_loss …, eval/<bench>/<metric>, cost/cpu_hours
        stage     nested under the first variant that needed it (shared stages: one run, linked
                  from every user); params: the stage config; per step: train/loss, train/lr,
                  train/tokens_per_s (real, non-pad), train/real_token_fraction; summary: stage/*,
                  data/skipped/<reason>, params/<component>/trainable; artifacts: manifest, skips
Runs end FINISHED, FAILED (with vlmsweep.error) or KILLED — never left RUNNING: a resume
closes what a killed driver left open.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from vlmsweep import storage

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

    def open(self) -> None:
        """Import MLflow's client now (~1-2 s on 2 CPUs): called before the training loop's
        clock starts, so the first step's throughput doesn't carry it."""
        import mlflow.tracking  # noqa: F401

    def log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        now = int(time.time() * 1000)
        batch = [Metric(f"train/{k}", float(v), now, step) for k, v in metrics.items() if k != "step"]
        MlflowClient(self.tracking_uri).log_batch(self.run_id, metrics=batch)


def local_artifact_root(tracking_uri: str) -> str | None:
    """Where a local sqlite store keeps its runs' artifacts: `mlartifacts/` beside the database,
    as `mlflow server` does. MLflow's default for a database store is ./mlruns under whatever
    folder the command ran in, so a run's config and eval files landed outside its work dir,
    in the user's current folder. None (the server's artifact store) for a tracking server."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///").split("?")[0])
    return (database.parent / "mlartifacts").resolve().as_uri()


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str = EXPERIMENT):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=local_artifact_root(tracking_uri))

    def log_variant_config(self, run_id: str, cfg, resolved_yaml: str) -> None:
        self._log_params(run_id, flatten(cfg.model_dump(mode="json")))
        self._log_text(run_id, resolved_yaml, "config.yaml")

    def log_stage_config(self, run_id: str, stage_cfg) -> None:
        self._log_params(run_id, flatten(stage_cfg.model_dump(mode="json")))

    def sink(self, run_id: str) -> MetricsSink:
        return MetricsSink(self.uri, run_id)

    def log_eval(self, run_id: str, variant_run: str, metrics: dict[str, float], out_dir: str, reused: bool) -> None:
        """Benchmark scores as eval/<bench>/<metric>, on the eval run and on the variant run."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(f"eval/{k}"), v, now, 0) for k, v in sorted(metrics.items())]
        for run in (run_id, variant_run):
            for i in range(0, len(batch), 500):
                self.client.log_batch(run, metrics=batch[i:i + 500])
        self.client.set_tag(run_id, "vlmsweep.reused", str(reused))
        for name in storage.list_dir(out_dir):
            if name.endswith(".json"):
                self._log_text(run_id, storage.read_text(storage.join(out_dir, name)), name, artifact_path="eval")

    # --- sweeps: one parent, one child per variant (found again on resume), stages nested ---

    def find_sweep(self, name: str, work_uri: str):
        """The latest sweep of this name in this work dir (a tracking server holds many work dirs,
        and two may run sweeps of one name: a resume must not adopt the other's runs)."""
        runs = self.client.search_runs([self.experiment_id], f"tags.`vlmsweep.kind` = 'sweep' and "
                                       f"tags.`vlmsweep.sweep_name` = '{name}' and "
                                       f"tags.`vlmsweep.work_dir` = '{work_uri}'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0] if runs else None

    def start_sweep(self, name: str, sweep_id: str, work_uri: str, resume_run=None) -> str:
        if resume_run is not None:
            self.client.update_run(resume_run.info.run_id, status="RUNNING")
            return resume_run.info.run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags={
            "mlflow.runName": name, "vlmsweep.kind": "sweep", "vlmsweep.sweep_name": name, "vlmsweep.sweep_id": sweep_id,
            "vlmsweep.work_dir": work_uri,
            "vlmsweep.git_sha": _git_sha(), **_versions()})
        return run.info.run_id

    def variant_run_for(self, sweep_run: str, sweep_id: str, variant) -> str:
        """The variant's child run: the existing one on resume (so there is exactly one), else a new one."""
        found = self.client.search_runs([self.experiment_id], f"tags.`vlmsweep.sweep_id` = '{sweep_id}' and "
                                        f"tags.`vlmsweep.kind` = 'variant' and tags.`mlflow.runName` = '{variant.name}'")
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {"mlflow.runName": variant.name, "mlflow.parentRunId": sweep_run, "vlmsweep.kind": "variant",
                "vlmsweep.sweep_id": sweep_id, "vlmsweep.git_sha": _git_sha(), **_versions(),
                **{f"axis.{k}": v for k, v in variant.axes.items()}}
        run_id = self.client.create_run(self.experiment_id, run_name=variant.name, tags=tags).info.run_id
        from vlmsweep.config.load import dump_resolved

        self.log_variant_config(run_id, variant.config, dump_resolved(variant.config))
        return run_id

    def close_stale_stage_runs(self, sweep_id: str) -> int:
        """Stage runs a killed driver left RUNNING: marked KILLED (never left RUNNING)."""
        stale = self.client.search_runs([self.experiment_id], f"tags.`vlmsweep.sweep_id` = '{sweep_id}' and "
                                        f"tags.`vlmsweep.kind` = 'stage' and attributes.status = 'RUNNING'")
        for run in stale:
            self.client.set_terminated(run.info.run_id, "KILLED")
        return len(stale)

    def finished_stage_run(self, sweep_id: str, stage_id: str) -> str | None:
        found = self.client.search_runs([self.experiment_id], f"tags.`vlmsweep.sweep_id` = '{sweep_id}' and "
                                        f"tags.`vlmsweep.stage_id` = '{stage_id}' and attributes.status = 'FINISHED'")
        return found[0].info.run_id if found else None

    def start_stage(self, sweep_id: str, owner_variant_run: str, node, reused: bool) -> str:
        tags = {"mlflow.runName": node.name, "mlflow.parentRunId": owner_variant_run, "vlmsweep.kind": "stage",
                "vlmsweep.sweep_id": sweep_id, "vlmsweep.stage_id": node.id, "vlmsweep.reused": str(reused),
                "vlmsweep.output": node.out_dir, "vlmsweep.used_by": ",".join(node.variants)[:5000]}
        run_id = self.client.create_run(self.experiment_id, run_name=node.name, tags=tags).info.run_id
        if node.kind == "train":
            self.log_stage_config(run_id, node.cfg.recipe.stages[node.index])
        return run_id

    def link_stage(self, variant_run: str, node, stage_run: str) -> None:
        self.client.set_tag(variant_run, f"vlmsweep.stage.{node.name}", stage_run)

    def log_stage_summary(self, stage_run: str, variant_runs: list[str], node, summary: dict) -> None:
        """A finished stage's numbers on its own run and on every variant that used it."""
        if node.kind == "eval":
            self.log_eval(stage_run, variant_runs[0], summary.get("eval", {}), node.out_dir, reused=False)
            for run in variant_runs[1:]:
                self._log_metrics(run, {metric_key(f"eval/{k}"): v for k, v in summary.get("eval", {}).items()})
            return
        metrics = {k: summary[k] for k in ("final_loss", "first_loss", "wall_s", "tokens_per_s", "steps", "truncated")
                   if isinstance(summary.get(k), (int, float))}
        metrics.update({f"data/skipped/{r}": n for r, n in (summary.get("skipped") or {}).items()})
        for row in summary.get("tuning") or []:  # exactly what trained, per component
            metrics[f"params/{row['component']}/trainable"] = row["trainable"]
            metrics[f"params/{row['component']}/total"] = row["total"]
            self.client.set_tag(stage_run, f"tune.{row['component']}", row["mode"])
        self._log_metrics(stage_run, {f"stage/{k}": v for k, v in metrics.items()})
        for run in variant_runs:
            self._log_metrics(run, {f"{node.name}/{k}": v for k, v in metrics.items()})
        for name in ("manifest.json", "skipped.json", "config.yaml"):
            location = storage.join(node.out_dir, name)
            if storage.is_file(location):
                self._log_text(stage_run, storage.read_text(location), name)

    def end(self, run_id: str, status: str, error: str | None = None, metrics: dict | None = None) -> None:
        if metrics:
            self._log_metrics(run_id, metrics)
        if error:
            self.client.set_tag(run_id, "vlmsweep.error", error[:5000])
        self.client.set_terminated(run_id, status)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self._log_text(run_id, text, name)

    def _log_metrics(self, run_id: str, metrics: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(k), float(v), now, 0) for k, v in sorted(metrics.items())]
        for i in range(0, len(batch), 500):
            self.client.log_batch(run_id, metrics=batch[i:i + 500])

    def _log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[i:i + 100])

    def _log_text(self, run_id: str, text: str, name: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, name)
            Path(path).write_text(text)
            self.client.log_artifact(run_id, path, artifact_path=artifact_path)
