"""A sweep submitted to a real multi-node Ray cluster, as a user would: `vlmsweep submit` to a
3-node cluster with token auth, the work dir in S3 (moto's server), MLflow a tracking server
(PostgreSQL backend, artifacts in the bucket). Every part runs on 127.0.0.1 and is started
and stopped here.

The nodes are started WITHOUT the AWS and MLflow variables: what the job's workers know of
the store and the tracking server comes from the submission's runtime_env, as on a real
cluster. Each node has its own VLMSWEEP_CACHE, so no process can lean on another's disk.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from realparts import S3, RayCluster, mlflow_server, postgres_db, ray_cluster, s3_server

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.yaml"
# small enough for `make test`: 32 px world, 4 steps a stage, two benchmarks
SMALL = ["--set", "training.steps=4", "--set", "data.synthetic.image_size=32",
         "--set", "eval.benchmarks=[pope,scienceqa]", "--set", "eval.max_new_tokens=4"]


@dataclass
class Parts:
    s3: S3
    tracking: str
    ray: RayCluster
    client_env: dict


def client_env(s3: S3, tracking: str, cluster: RayCluster, cache: Path) -> dict:
    """The submitting user's shell: the store, the tracking server, the cluster's token."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "MLFLOW_", "RAY_ADDRESS", "RAY_AUTH", "VLMSWEEP_"))}
    return {**env, **s3.env, **cluster.env, "MLFLOW_TRACKING_URI": tracking, "VLMSWEEP_CACHE": str(cache),
            "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(s3_server("vlmsweep-cluster"))
        db = stack.enter_context(postgres_db())
        tracking = stack.enter_context(mlflow_server(db, s3.uri("mlflow"), env=s3.env))
        cluster = stack.enter_context(ray_cluster(nodes=3, cpus_per_node=1, node_caches=True))
        yield Parts(s3, tracking, cluster, client_env(s3, tracking, cluster, tmp_path_factory.mktemp("client-cache")))


def cli(parts: Parts, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlmsweep.cli", *args], env=parts.client_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def job_client(cluster: RayCluster):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.dashboard_url, headers=cluster.headers())


def wait_for_job(cluster: RayCluster, job_id: str, timeout: float = 900) -> str:
    client = job_client(cluster)
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = str(client.get_job_status(job_id)).rsplit(".", 1)[-1]
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        time.sleep(3)
    raise AssertionError(f"job {job_id} still running after {timeout} s:\n{client.get_job_logs(job_id)[-4000:]}")


def submitted_job_id(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("submitted "))
    return line.split()[1]


def mlflow_runs(tracking: str, sweep: str, work_dir: str):
    """The sweep run of this name and work dir, its variant runs and its stage runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("vlmsweep").experiment_id
    sweeps = client.search_runs([exp], f"tags.`vlmsweep.kind` = 'sweep' and tags.`vlmsweep.sweep_name` = '{sweep}' "
                                       f"and tags.`vlmsweep.work_dir` = '{work_dir}'")
    assert len(sweeps) == 1, [r.info.run_id for r in sweeps]
    sid = sweeps[0].data.tags["vlmsweep.sweep_id"]
    variants = client.search_runs([exp], f"tags.`vlmsweep.sweep_id` = '{sid}' and tags.`vlmsweep.kind` = 'variant'")
    stages = client.search_runs([exp], f"tags.`vlmsweep.sweep_id` = '{sid}' and tags.`vlmsweep.kind` = 'stage'")
    return client, sweeps[0], variants, stages


def no_local_work_dirs(*roots: Path) -> list[str]:
    """Any `.vlmsweep` work dir or stage output written on local disk under these roots."""
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.name == ".vlmsweep" or (path.name == "manifest.json" and "stages" in path.parts
                                             and "copies" not in path.parts):
                found.append(str(path))
    return found


def test_submitted_variant_runs_on_three_nodes_with_s3_and_a_tracking_server(parts):
    """One variant of the smoke grid (pretrain → finetune → eval), submitted as a Ray Job."""
    work = parts.s3.uri("small")
    result = cli(parts, "submit", str(SMOKE), "--address", parts.ray.dashboard_url, "--work-dir", work,
                 "--variant", "TinyLLaVA-base-Sig-mlp2x", *SMALL)
    job_id = submitted_job_id(result)
    status = wait_for_job(parts.ray, job_id)
    logs = job_client(parts.ray).get_job_logs(job_id)
    assert status == "SUCCEEDED", logs[-6000:]
    assert "row/s]" not in logs, "Ray Data progress bars reached the job log"

    client, sweep, variants, stages = mlflow_runs(parts.tracking, "smoke", work)
    assert sweep.info.status == "FINISHED"
    assert [(r.info.run_name, r.info.status) for r in variants] == [("TinyLLaVA-base-Sig-mlp2x", "FINISHED")]
    scores = variants[0].data.metrics
    assert "eval/pope/f1" in scores and "eval/scienceqa/accuracy" in scores, sorted(scores)
    assert sorted(r.data.tags["mlflow.runName"] for r in stages) == ["eval", "finetune", "pretrain"]
    assert all(r.info.status == "FINISHED" for r in stages)
    # per-step metrics came from the rank-0 worker on some node, straight to the server
    finetune = next(r for r in stages if r.data.tags["mlflow.runName"] == "finetune")
    assert len(client.get_metric_history(finetune.info.run_id, "train/loss")) == 4

    keys = parts.s3.keys("small/")
    manifests = [k for k in keys if k.startswith("small/stages/") and k.endswith("/manifest.json")]
    assert len(manifests) == 2                                   # pretrain and finetune outputs
    assert any(k.startswith("small/stages/eval-") and k.endswith("/results.json") for k in keys)
    assert any(k.startswith("small/ray/") for k in keys)          # Ray Train / Tune state
    assert any(k.endswith("/world.json") for k in keys)           # the shards the stages streamed
    artifacts = parts.s3.keys("mlflow/")
    assert any(k.endswith("config.yaml") for k in artifacts) and any(k.endswith("manifest.json") for k in artifacts)
    assert not no_local_work_dirs(ROOT, parts.ray.temp_dir)

    # resubmitting the finished sweep resumes it: nothing runs again, still one run per variant
    again = submitted_job_id(cli(parts, "submit", str(SMOKE), "--address", parts.ray.dashboard_url,
                                 "--work-dir", work, "--variant", "TinyLLaVA-base-Sig-mlp2x", *SMALL))
    assert again != job_id and wait_for_job(parts.ray, again) == "SUCCEEDED"
    assert "0 stage(s) run" in job_client(parts.ray).get_job_logs(again)
    _, _, variants, _ = mlflow_runs(parts.tracking, "smoke", work)
    assert len(variants) == 1 and variants[0].info.status == "FINISHED"

    # the report reads the tracking server and lands in the bucket
    report = cli(parts, "report", "smoke", "--work-dir", work)
    assert report.returncode == 0, report.stderr
    assert {"small/reports/smoke/report.md", "small/reports/smoke/report.html"} <= set(parts.s3.keys("small/reports/"))


def test_a_sqlite_tracking_uri_with_a_cluster_is_refused_before_anything_runs(parts):
    env = {**parts.client_env, "MLFLOW_TRACKING_URI": "sqlite:////tmp/x.db"}
    result = subprocess.run([sys.executable, "-m", "vlmsweep.cli", "submit", str(SMOKE), "--address",
                             parts.ray.dashboard_url, "--work-dir", parts.s3.uri("refused")],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "MLFLOW_TRACKING_URI" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not parts.s3.keys("refused/")

