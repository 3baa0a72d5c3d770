"""`vlmsweep submit` and `vlmsweep jobs` against real parts on 127.0.0.1: a 2-node Ray cluster with
token auth, an S3 API server (moto) and an MLflow tracking server (sqlite backend, artifacts
in the bucket). The CLI runs as a subprocess, as a user runs it.

What is checked here is the submission machinery: credentials, one job per sweep, the
attempt/resume rule, list/status/logs/stop, and one-line errors. Whether the submitted sweep
then trains to the end on the cluster is tests/test_cluster.py's question.
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

from realparts import S3, RayCluster, mlflow_server, ray_cluster, s3_server

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.yaml"
VARIANT = "TinyLLaVA-base-Sig-mlp2x"
SMALL = ["--variant", VARIANT, "--set", "training.steps=4", "--set", "data.synthetic.image_size=32",
         "--set", "eval.benchmarks=[pope]", "--set", "eval.max_new_tokens=4"]
AUTH_WORDS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")


@dataclass
class Parts:
    s3: S3
    tracking: str
    ray: RayCluster
    env: dict          # the submitting user's shell: store, tracking server, the cluster's token


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("submit")
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(s3_server("vlmsweep-submit"))
        tracking = stack.enter_context(mlflow_server(f"sqlite:///{tmp / 'mlflow.db'}", s3.uri("mlflow"), env=s3.env,
                                                     log_dir=tmp / "mlflow"))
        cluster = stack.enter_context(ray_cluster(nodes=2, cpus_per_node=1, node_caches=True))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "MLFLOW_", "RAY_ADDRESS", "RAY_AUTH", "VLMSWEEP_"))}
        env.update({**s3.env, **cluster.env, "MLFLOW_TRACKING_URI": tracking, "HF_HUB_OFFLINE": "1",
                    "VLMSWEEP_CACHE": str(tmp / "client-cache"), "HOME": str(tmp / "home")})
        yield Parts(s3, tracking, cluster, env)


def cli(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlmsweep.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def without_token(parts: Parts, **extra: str) -> dict:
    """The user's shell with no token anywhere: no RAY_AUTH_* and a HOME without ~/.ray/auth_token."""
    return {**{k: v for k, v in parts.env.items() if not k.startswith("RAY_AUTH")}, **extra}


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def job_status(cluster: RayCluster, job_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(cluster.dashboard_url, headers=cluster.headers()).get_job_info(job_id)
    return str(info.status).rsplit(".", 1)[-1]


def test_a_client_without_the_token_gets_one_line_naming_the_variables(parts):
    work = parts.s3.uri("refused")
    cases = {
        "no token": without_token(parts),
        "wrong token": without_token(parts, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64),
    }
    for case, env in cases.items():
        started = time.monotonic()
        line = one_line_error(cli(env, "submit", str(SMOKE), "--address", parts.ray.dashboard_url, "--work-dir", work))
        assert time.monotonic() - started < 60, f"{case}: not fast"
        assert all(w in line for w in AUTH_WORDS), f"{case}: {line}"
        assert "--address" in line, line
        assert all(w in one_line_error(cli(env, "jobs", "list", "--address", parts.ray.dashboard_url))
                   for w in AUTH_WORDS)
    # the driver's side (ensure_ray → the GCS): refused at once, not after Ray's 20 s of retries
    code = ("import sys\nfrom vlmsweep.config.errors import ConfigError\n"
            "from vlmsweep.sweep.ray_cluster import ensure_ray\n"
            "try:\n    ensure_ray(sys.argv[1])\nexcept ConfigError as err:\n    print(err)\n    sys.exit(2)")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code, parts.ray.gcs_address], env=without_token(parts),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and all(w in result.stdout for w in AUTH_WORDS), result.stdout + result.stderr
    assert time.monotonic() - started < 15
    assert not parts.s3.keys("refused/")


def test_a_local_work_dir_or_a_sqlite_tracking_uri_is_refused_before_submitting(parts):
    line = one_line_error(cli(parts.env, "submit", str(SMOKE), "--address", parts.ray.dashboard_url,
                              "--work-dir", "relative/dir"))
    assert "--work-dir" in line and "relative" in line
    line = one_line_error(cli({**parts.env, "MLFLOW_TRACKING_URI": "sqlite:////tmp/x.db"}, "submit", str(SMOKE),
                              "--address", parts.ray.dashboard_url, "--work-dir", parts.s3.uri("x")))
    assert "MLFLOW_TRACKING_URI" in line
    line = one_line_error(cli(parts.env, "jobs", "status", "vlmsweep-nosuch-1", "--address", parts.ray.dashboard_url))
    assert "vlmsweep-nosuch-1" in line and "jobs list" in line


def test_submit_list_logs_one_copy_per_sweep_stop_and_resume(parts):
    address = ["--address", parts.ray.dashboard_url]
    work = parts.s3.uri("jobs")
    first = cli(parts.env, "submit", str(SMOKE), *address, "--work-dir", work, *SMALL)
    assert first.returncode == 0, first.stdout + first.stderr
    job_id = first.stdout.split()[1]
    assert first.stdout.startswith(f"submitted {job_id} ") and job_id.startswith("vlmsweep-smoke-")
    assert job_id.endswith("-1")

    # the same sweep again while it runs: nothing new is submitted
    second = cli(parts.env, "submit", str(SMOKE), *address, "--work-dir", work, *SMALL)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.startswith(f"already running: {job_id} "), second.stdout

    listed = cli(parts.env, "jobs", "list", *address)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == [job_id], listed.stdout

    # the driver's log: it plans the sweep (or says why it could not) — wait for its first lines
    deadline, logs = time.monotonic() + 90, ""
    while time.monotonic() < deadline and "sweep smoke" not in logs and "error" not in logs.lower():
        time.sleep(2)
        out = cli(parts.env, "jobs", "logs", job_id, *address)
        assert out.returncode == 0, out.stderr
        logs = out.stdout
    assert "sweep smoke" in logs or "error" in logs.lower(), logs[-3000:]

    status = cli(parts.env, "jobs", "status", job_id, *address)
    assert status.returncode == 0 and status.stdout.startswith(f"{job_id}: "), status.stdout + status.stderr
    assert f"--work-dir {work}" in status.stdout and "--resume" not in status.stdout

    stopped = cli(parts.env, "jobs", "stop", job_id, *address)
    assert stopped.returncode == 0, stopped.stderr
    final = job_status(parts.ray, job_id)       # STOPPED, unless the driver had ended by itself just before
    assert final in ("STOPPED", "FAILED", "SUCCEEDED") and stopped.stdout.strip() == f"{job_id}: {final}"
    followed = cli(parts.env, "jobs", "logs", job_id, "--follow", *address, timeout=60)   # ends with the job
    assert followed.returncode == 0 and logs.strip()[:200] in followed.stdout, followed.stderr[-2000:]

    # its driver is gone: the next submit is attempt 2 of the same sweep, resuming it
    third = cli(parts.env, "submit", str(SMOKE), *address, "--work-dir", work, *SMALL)
    assert third.returncode == 0, third.stdout + third.stderr
    resumed = third.stdout.split()[1]
    assert resumed == job_id[:-1] + "2" and "(resuming)" in third.stdout, third.stdout
    status = cli(parts.env, "jobs", "status", resumed, *address)
    assert "--resume" in status.stdout, status.stdout
    assert cli(parts.env, "jobs", "stop", resumed, *address).returncode == 0

    # another work dir is another sweep
    other = cli(parts.env, "submit", str(SMOKE), *address, "--work-dir", parts.s3.uri("other"), *SMALL)
    assert other.returncode == 0 and other.stdout.split()[1] not in (job_id, resumed), other.stdout
    assert cli(parts.env, "jobs", "stop", other.stdout.split()[1], *address).returncode == 0


# ----------------------------------------------------------- the pieces, without a cluster

def test_the_bundle_holds_the_grid_and_its_base_chain_with_absolute_bases_made_relative(tmp_path):
    from vlmsweep.config.grid import load_any
    from vlmsweep.sweep.submit import bundle_grid

    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "common.yaml").write_text((ROOT / "experiments/smoke/variant.yaml").read_text())
    (tmp_path / "shared" / "variant.yaml").write_text("# extends the common one\nbase: common.yaml\nseed: 3\n")
    grid = tmp_path / "grids" / "g.yaml"
    grid.parent.mkdir()
    text = (SMOKE.read_text().replace("base: smoke/variant.yaml", f"base: {tmp_path / 'shared' / 'variant.yaml'}"))
    grid.write_text(text)
    out = tmp_path / "bundle"
    rel = bundle_grid(grid, out)
    assert rel.as_posix() == "grids/g.yaml"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.yaml")) == [
        "grids/g.yaml", "shared/common.yaml", "shared/variant.yaml"]
    bundled = (out / rel).read_text().splitlines()
    line = next(i for i, x in enumerate(text.splitlines()) if x.startswith("base:"))
    assert bundled[line] == 'base: "../shared/variant.yaml"'            # same line: file:line messages hold
    assert len(bundled) == len(text.splitlines())
    before, after = load_any(grid), load_any(out / rel)
    assert [v.name for v in after.variants] == [v.name for v in before.variants]
    assert [v.config.seed for v in after.variants] == [3] * len(before.variants)


def test_work_dir_tracking_uri_and_worker_env_rules(monkeypatch):
    from vlmsweep.config.errors import ConfigError
    from vlmsweep.sweep.ray_cluster import check_tracking, worker_env
    from vlmsweep.sweep.submit import cluster_work_dir, sweep_prefix

    monkeypatch.delenv("VLMSWEEP_WORK_DIR", raising=False)
    assert cluster_work_dir("s3://b/x/") == "s3://b/x" and cluster_work_dir("/shared/x/../y") == "/shared/y"
    for bad in (None, "rel/x", "ftp://h/x", "file://rel"):
        with pytest.raises(ConfigError) as err:
            cluster_work_dir(bad)
        assert "\n" not in str(err.value) and str(err.value).startswith("--work-dir: ")
    monkeypatch.setenv("VLMSWEEP_WORK_DIR", "relative")
    with pytest.raises(ConfigError, match="^VLMSWEEP_WORK_DIR: "):
        cluster_work_dir(None)
    assert sweep_prefix("smoke grid!", "s3://b/x") == sweep_prefix("smoke grid!", "s3://b/x") != \
        sweep_prefix("smoke grid!", "s3://b/y")
    assert sweep_prefix("smoke grid!", "s3://b/x").startswith("vlmsweep-smoke-grid-")

    check_tracking("http://mlflow:5000", True)
    check_tracking("sqlite:///x.db", False)
    for bad in ("sqlite:///x.db", "file:///x", None):
        with pytest.raises(ConfigError, match="^MLFLOW_TRACKING_URI: ") as err:
            check_tracking(bad, True)
        assert "\n" not in str(err.value)

    for key in list(os.environ):
        if key.startswith(("AWS_", "VLMSWEEP_", "MLFLOW_", "DS_", "HF_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3:9000")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("VLMSWEEP_DATA", "s3://b/data")
    monkeypatch.setenv("VLMSWEEP_CACHE", "/home/me/.cache/vlmsweep")       # node-local: stays here
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret")                         # never shipped
    assert worker_env() == {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_TRAIN_V2_ENABLED": "1",
                            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
                            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                            "AWS_ENDPOINT_URL": "http://s3:9000",
                            "MLFLOW_TRACKING_URI": "http://mlflow:5000", "VLMSWEEP_DATA": "s3://b/data"}
