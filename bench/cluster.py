"""The smoke grid on a 3-node cluster with S3 vs the embedded local run, side by side in one run.

  local    `vlmsweep sweep GRID --work-dir <tmp>`: in-process Ray (2 CPUs), sqlite MLflow
  cluster  `vlmsweep submit GRID --address <dashboard> --work-dir s3://…`: a head (no CPU, it
           only schedules) and two 1-CPU worker nodes with token auth, the work dir in S3
           (moto's server), MLflow a tracking server with its artifacts in the bucket

Both sides have the same CPUs to train with (2) and start from nothing (their own world and
presets). Every part runs on 127.0.0.1 and is stopped by its pid at the end (tests/realparts.py).

    .venv/bin/python bench/cluster.py [experiments/smoke.yaml] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from realparts import mlflow_server, ray_cluster, s3_server, tracking_backend  # noqa: E402

CLI = [sys.executable, "-m", "vlmsweep.cli"]


def run(cmd: list[str], env: dict) -> str:
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("grid", nargs="?", default="experiments/smoke.yaml")
    ap.add_argument("--set", action="append", default=[], help="passed to both sides")
    args = ap.parse_args()
    sets = [x for kv in args.set for x in ("--set", kv)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_", "VLMSWEEP_"))}

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run(CLI + ["sweep", args.grid, "--work-dir", f"{tmp}/local", *sets],
            {**clean, "VLMSWEEP_CACHE": f"{tmp}/local-cache"})
        local_s = time.perf_counter() - start
        print(f"local   (embedded Ray, 2 CPUs, local work dir):      {local_s:6.0f} s", flush=True)

        with contextlib.ExitStack() as stack:
            s3 = stack.enter_context(s3_server("vlmsweep-bench"))
            backend = stack.enter_context(tracking_backend(tmp))
            tracking = stack.enter_context(mlflow_server(backend, s3.uri("mlflow"), env=s3.env))
            cluster = stack.enter_context(ray_cluster(nodes=3, cpus_per_node=1, head_cpus=0, node_caches=True))
            env = {**clean, **s3.env, **cluster.env, "MLFLOW_TRACKING_URI": tracking,
                   "VLMSWEEP_CACHE": f"{tmp}/client-cache"}
            from ray.job_submission import JobSubmissionClient

            jobs = JobSubmissionClient(cluster.dashboard_url, headers=cluster.headers())
            start = time.perf_counter()
            out = run(CLI + ["submit", args.grid, "--address", cluster.dashboard_url, "--work-dir",
                             s3.uri("bench"), *sets], env)
            job = next(x for x in out.splitlines() if x.startswith("submitted ")).split()[1]
            while (status := str(jobs.get_job_status(job)).rsplit(".", 1)[-1]) not in ("SUCCEEDED", "FAILED", "STOPPED"):
                time.sleep(2)
            cluster_s = time.perf_counter() - start
            if status != "SUCCEEDED":
                raise SystemExit(f"cluster job {status}:\n{jobs.get_job_logs(job)[-4000:]}")
            summary = next((x for x in jobs.get_job_logs(job).splitlines() if "stage(s) run" in x), "")
            print(f"cluster (3 nodes, token auth, S3 work dir, MLflow server): {cluster_s:6.0f} s   {summary}")
    print(f"cluster / local: {cluster_s / local_s:.2f}x (target ≤ 1.5x)")


if __name__ == "__main__":
    main()
