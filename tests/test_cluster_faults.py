"""Faults on a real multi-node cluster (`make test-cluster`; minutes, so not in `make test`).

- A worker NODE is removed mid-stage: the stage resumes on the remaining nodes from its last
  checkpoint in S3, and its weights equal an uninterrupted run's.
- The job's driver is killed mid-sweep: `vlmsweep submit` again resumes it; the end state is
  one FINISHED MLflow run per variant, with eval scores, and no stage trained twice.

The cluster's head has no CPU (it only schedules, as on real clusters), so training runs on
the two worker nodes and removing one of them is always possible.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter

import pytest
import torch
from safetensors.torch import load as load_safetensors

from realparts import mlflow_server, ray_cluster, s3_server, tracking_backend
from test_cluster import SMOKE, Parts, cli, client_env, job_client, mlflow_runs, submitted_job_id, wait_for_job

VARIANT = "TinyLLaVA-base-Sig-mlp2x"
STEPS = 80
TINY = ["--set", "data.synthetic.image_size=32", "--set", "eval.max_new_tokens=4"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(s3_server("vlmsweep-faults"))
        backend = stack.enter_context(tracking_backend(tmp))
        tracking = stack.enter_context(mlflow_server(backend, s3.uri("mlflow"), env=s3.env))
        cluster = stack.enter_context(ray_cluster(nodes=3, cpus_per_node=2, head_cpus=0, node_caches=True))
        yield Parts(s3, tracking, cluster, client_env(s3, tracking, cluster, tmp / "client-cache"))


def _s3_json(parts: Parts, key: str) -> dict:
    return json.loads(parts.s3.client().get_object(Bucket=parts.s3.bucket, Key=key)["Body"].read())


def _weights(parts: Parts, key: str) -> dict[str, torch.Tensor]:
    return load_safetensors(parts.s3.client().get_object(Bucket=parts.s3.bucket, Key=key)["Body"].read())


def _pretrain_dir(parts: Parts, prefix: str) -> str:
    dirs = {k.split("/")[2] for k in parts.s3.keys(f"{prefix}/stages/pretrain-")}
    assert len(dirs) == 1, dirs
    return f"{prefix}/stages/{dirs.pop()}"


def test_a_node_removed_mid_stage_resumes_from_its_s3_checkpoint_with_equal_weights(parts):
    # a single pretrain stage long enough to be caught mid-way, a checkpoint every 4 steps
    stage_sets = ["--set", f"training.steps={STEPS}", "--set", "training.checkpoint_every=4", "--set", "eval.benchmarks=[]",
                  "--set", "training.max_failures=2", *TINY]
    job = submitted_job_id(cli(parts, "submit", str(SMOKE), "--address", parts.ray.dashboard_url, "--work-dir",
                               parts.s3.uri("node-fault"), "--variant", VARIANT, "--retries", "2", *stage_sets))
    deadline = time.time() + 600
    # a checkpoint Ray Train has registered (its snapshot written after it): one that is still
    # being reported when the node goes would be lost with it, and the stage would start over
    while not [k for k in parts.s3.keys("node-fault/ray/pretrain-") if k.endswith("checkpoint_manager_snapshot.json")]:
        assert time.time() < deadline, "no checkpoint of the pretrain stage reached S3 in time"
        assert str(job_client(parts.ray).get_job_status(job)).endswith(("RUNNING", "PENDING")), \
            job_client(parts.ray).get_job_logs(job)[-4000:]
        time.sleep(0.2)
    hosts = parts.ray.actor_nodes("RayTrainWorker")
    assert hosts and 0 not in hosts, hosts                 # the head has no CPU: never a training node
    victim = sorted(hosts)[0]
    assert not [k for k in parts.s3.keys("node-fault/stages/") if k.endswith("/manifest.json")], "too late"
    parts.ray.remove_node(victim)
    print(f"removed node {victim} (train workers on {hosts}) at {time.strftime('%X')}", flush=True)
    status = wait_for_job(parts.ray, job)
    logs = job_client(parts.ray).get_job_logs(job)
    assert status == "SUCCEEDED", logs[-6000:]

    faulty = _pretrain_dir(parts, "node-fault")
    manifest = _s3_json(parts, f"{faulty}/manifest.json")
    assert manifest["steps"] == STEPS
    assert manifest["resumed_from_step"] and manifest["resumed_from_step"] % 4 == 0, logs[-8000:]
    assert len(parts.ray.alive_nodes()) == 2

    # the same stage, uninterrupted, on what is left of the cluster
    clean = submitted_job_id(cli(parts, "submit", str(SMOKE), "--address", parts.ray.dashboard_url, "--work-dir",
                                 parts.s3.uri("node-clean"), "--variant", VARIANT, *stage_sets))
    assert wait_for_job(parts.ray, clean) == "SUCCEEDED"
    uninterrupted = _pretrain_dir(parts, "node-clean")
    assert faulty.rsplit("/", 1)[1] == uninterrupted.rsplit("/", 1)[1]   # one stage identity
    a, b = _weights(parts, f"{uninterrupted}/connector.safetensors"), _weights(parts, f"{faulty}/connector.safetensors")
    assert a.keys() == b.keys()
    if any(not torch.allclose(a[name], b[name], rtol=0, atol=1e-6) for name in a):
        # where the two runs part: before the checkpoint it resumed from, or after it
        pytest.fail(f"the resumed stage's weights differ from an uninterrupted run's; "
                    f"{_first_difference(parts, manifest['resumed_from_step'])}\n{logs[-6000:]}")


def _losses(parts: Parts, work_dir: str) -> dict[int, float]:
    client, _, _, stages = mlflow_runs(parts.tracking, "smoke", work_dir)
    [pretrain] = [r for r in stages if r.data.tags["vlmsweep.stage_id"].startswith("pretrain-")]
    history = sorted(client.get_metric_history(pretrain.info.run_id, "train/loss"), key=lambda m: m.timestamp)
    return {m.step: m.value for m in history}


def _first_difference(parts: Parts, resumed_from: int) -> str:
    """The first step whose logged loss differs between the interrupted and the clean run
    (the interrupted run logs the steps after its checkpoint twice: the last value counts)."""
    try:
        faulty, clean = _losses(parts, parts.s3.uri("node-fault")), _losses(parts, parts.s3.uri("node-clean"))
    except Exception as err:    # a diagnosis that fails must not hide the failure it explains
        return f"(their loss histories could not be read: {err!r})"
    step = next((s for s in sorted(clean) if faulty.get(s) != clean[s]), None)
    if step is None:
        return f"their losses agree at every step (resumed from step {resumed_from})"
    return (f"the losses first differ at step {step} ({faulty.get(step)} vs {clean[step]}), "
            f"resumed from step {resumed_from}")


def test_a_killed_driver_resumes_on_resubmit_with_one_run_per_variant_and_no_stage_twice(parts):
    sets = ["--set", "training.steps=6", "--set", "eval.benchmarks=[pope,scienceqa]", *TINY]
    prefix = "driver-fault"
    first = submitted_job_id(cli(parts, "submit", str(SMOKE), "--address", parts.ray.dashboard_url,
                                 "--work-dir", parts.s3.uri(prefix), *sets))
    deadline = time.time() + 600
    while not [k for k in parts.s3.keys(f"{prefix}/stages/") if k.endswith("/manifest.json")]:
        assert time.time() < deadline, "no stage finished in time"
        time.sleep(0.5)
    driver = job_client(parts.ray).get_job_info(first).driver_info
    assert driver is not None and driver.pid
    os.kill(int(driver.pid), signal.SIGKILL)              # the job's driver, mid-sweep
    assert wait_for_job(parts.ray, first, timeout=120) == "FAILED"
    done_before = {k: _s3_json(parts, k)["created"] for k in parts.s3.keys(f"{prefix}/stages/")
                   if k.endswith("/manifest.json")}
    assert done_before

    again = cli(parts, "submit", str(SMOKE), "--address", parts.ray.dashboard_url, "--work-dir",
                parts.s3.uri(prefix), *sets)
    second = submitted_job_id(again)
    assert second != first
    status = wait_for_job(parts.ray, second)
    logs = job_client(parts.ray).get_job_logs(second)
    assert status == "SUCCEEDED", logs[-6000:]
    assert "resuming sweep smoke" in logs

    client, sweep, variants, stages = mlflow_runs(parts.tracking, "smoke", parts.s3.uri(prefix))
    assert sweep.info.status == "FINISHED"
    assert Counter(r.info.run_name for r in variants) == {
        "TinyLLaVA-base-Sig-mlp2x": 1, "TinyLLaVA-share-Sig-mlp2x": 1, "TinyLLaVA-base-CLIP-mlp2x": 1,
        "TinyLLaVA-base-Sig-lnmlp": 1}
    assert all(r.info.status == "FINISHED" for r in variants)
    assert all("eval/pope/f1" in r.data.metrics for r in variants)
    finished = Counter(r.data.tags["vlmsweep.stage_id"] for r in stages if r.info.status == "FINISHED")
    assert finished and all(n == 1 for n in finished.values()), finished     # no stage ran (or was recorded) twice
    assert not [r for r in stages if r.info.status == "RUNNING"]
    # stages finished before the kill were reused, not trained again
    for key, created in done_before.items():
        assert _s3_json(parts, key)["created"] == created, key
