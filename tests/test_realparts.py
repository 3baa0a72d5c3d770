"""Smoke tests of the real parts the cluster tests start (tests/realparts.py): an S3 API server,
PostgreSQL behind an MLflow tracking server whose artifacts land in the bucket, and a 3-node
Ray cluster with token auth, all on 127.0.0.1. Ray clients run in subprocesses: a client's
token is cached per process, and this process must stay free to start a local Ray of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from realparts import have_postgres, mlflow_server, postgres_db, ray_cluster, s3_server


def test_s3_server_serves_pyarrow_fs_configured_by_the_aws_variables_alone(monkeypatch):
    import pyarrow.fs as pafs

    with s3_server() as s3:
        for key, value in s3.env.items():
            monkeypatch.setenv(key, value)
        fs, path = pafs.FileSystem.from_uri(s3.uri("smoke/hello.txt"))
        assert isinstance(fs, pafs.S3FileSystem) and path == "vlmsweep-test/smoke/hello.txt"
        with fs.open_output_stream(path) as out:
            out.write(b"hello")
        with fs.open_input_stream(path) as inp:
            assert inp.read() == b"hello"
        assert s3.keys("smoke/") == ["smoke/hello.txt"]
        port = int(s3.endpoint.rsplit(":", 1)[1])
    with pytest.raises(OSError):               # stopped
        __import__("socket").create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.skipif(not have_postgres(), reason="Debian's postgresql is not installed (make system-deps)")
def test_postgres_backed_mlflow_server_puts_artifacts_in_the_bucket(tmp_path, monkeypatch):
    import sqlalchemy
    from mlflow.tracking import MlflowClient

    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)      # this client reaches the bucket only through the server

    with s3_server() as s3, postgres_db() as db, mlflow_server(db, s3.uri("mlflow"), env=s3.env,
                                                               log_dir=tmp_path) as tracking:
        assert db.startswith("postgresql://") and tracking.startswith("http://127.0.0.1:")
        client = MlflowClient(tracking)
        exp = client.create_experiment("realparts")
        run = client.create_run(exp, run_name="smoke").info.run_id
        client.log_metric(run, "loss", 0.5)
        client.log_text(run, "hello", "notes/hello.txt")
        client.set_terminated(run)
        assert client.get_run(run).info.status == "FINISHED"
        assert [a.path for a in client.list_artifacts(run, "notes")] == ["notes/hello.txt"]
        keys = s3.keys("mlflow/")
        assert any(k.endswith(f"{run}/artifacts/notes/hello.txt") for k in keys), keys
        with sqlalchemy.create_engine(db).connect() as conn:        # the run is in PostgreSQL
            rows = conn.execute(sqlalchemy.text("select status from runs where run_uuid = :r"), {"r": run}).all()
        assert rows == [("FINISHED",)]


CLIENT = textwrap.dedent("""
    import os, sys, ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    ray.init(address=sys.argv[1])
    nodes = [n for n in ray.nodes() if n["Alive"]]
    @ray.remote(num_cpus=1)
    def env():
        return os.environ.get("VLMSWEEP_PROBE"), os.environ.get("VLMSWEEP_TEST_RAY_NODE")
    got = ray.get([env.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
                   for n in nodes])
    print("NODES", len(nodes), sorted(got))
""")


def run_client(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_three_node_ray_cluster_with_token_auth(tmp_path):
    home = tmp_path / "home"                  # the nodes' ~: nothing may write ~/.ray/auth_token
    home.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    with ray_cluster(nodes=3, cpus_per_node=1, env={"VLMSWEEP_PROBE": "reached", "HOME": str(home)}) as cluster:
        assert cluster.dashboard_url.startswith("http://127.0.0.1:") and cluster.gcs_address.startswith("127.0.0.1:")
        assert len(cluster.alive_nodes()) == 3

        # a client with the token env: connects, sees 3 nodes, and the env reached a task on each
        ok = run_client({**base, **cluster.env}, "-c", CLIENT, cluster.gcs_address)
        assert ok.returncode == 0, ok.stderr[-3000:]
        assert "NODES 3 [('reached', '0'), ('reached', '1'), ('reached', '2')]" in ok.stdout, ok.stdout

        # without the token (none in its env nor its ~): the GCS refuses it (one attempt, not Ray's 20)
        refused = run_client({**base, "HOME": str(tmp_path), "RAY_gcs_server_port_wait_time_s": "1",
                              "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, "-c", CLIENT, cluster.gcs_address)
        assert refused.returncode != 0 and "InvalidAuthToken" in refused.stderr, refused.stderr[-3000:]
        # and so does the dashboard (the Jobs API)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{cluster.dashboard_url}/api/jobs/", timeout=5)
        assert err.value.code == 401

        # every port the cluster opened is on loopback
        listening = [c.laddr for p in cluster.processes() for c in _connections(p) if c.status == psutil.CONN_LISTEN]
        assert listening and all(a.ip in ("127.0.0.1", "::ffff:127.0.0.1") for a in listening), listening

        # a worker node goes away: the cluster sees 2 nodes, none of that node's processes is left
        node2 = {p.pid for p in cluster.processes() if _node(p) == "2"}
        cluster.remove_node(2)
        cluster.wait_for_nodes(2, timeout=90)
        assert not [pid for pid in node2 if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
        pids = [p.pid for p in cluster.processes()]
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert not (home / ".ray").exists()


def _connections(p: psutil.Process) -> list:
    try:
        return p.net_connections(kind="inet")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _node(p: psutil.Process) -> str | None:
    try:
        return p.environ().get("VLMSWEEP_TEST_RAY_NODE")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def test_a_missing_postgres_is_a_clear_error(monkeypatch):
    import realparts

    monkeypatch.setattr(realparts.glob, "glob", lambda _pattern: [])
    monkeypatch.setattr(realparts.shutil, "which", lambda _name: None)
    with pytest.raises(RuntimeError, match="postgresql"):
        with postgres_db():
            pass
    assert Path(realparts.__file__).name == "realparts.py"
