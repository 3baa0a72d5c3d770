"""Real parts for tests, started and stopped by the tests themselves, on 127.0.0.1 only.

Not a test module: context managers that tests (and fixtures) enter.
- `s3_server()`        an S3 API server (moto's ThreadedMotoServer) with one bucket;
- `postgres_db()`      a throwaway PostgreSQL cluster (Debian's postgresql) and one database;
- `mlflow_server(...)` an MLflow tracking server (its own process group) whose artifacts go to S3;
- `ray_cluster(...)`   a multi-node Ray cluster on this machine with token auth ON: a head and
                       worker nodes, each a `ray start --block` in its own process group, so a
                       test can remove one node by killing its group.

Every part is stopped by the pid / process group it started (never `ray stop`, never by name),
and the Ray cluster's teardown checks that none of its processes is left.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

NODE_RESOURCE = "vlmsweep_test_node_"       # node i carries {NODE_RESOURCE}i: 1, to tell nodes apart
BIN = Path(sys.executable).parent          # the venv's bin: ray, mlflow
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None,
          every: float = 0.25):
    """Poll `check()` until it returns something truthy; fail naming `what` (and the log's tail)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}{_tail(log)}")
        try:
            value = check()
            if value:
                return value
        except Exception as err:  # noqa: BLE001 - still starting
            last = err
        time.sleep(every)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s (last error: {last}){_tail(log)}")


def _tail(log: Path | None, n: int = 30) -> str:
    if log is None or not Path(log).exists():
        return ""
    lines = Path(log).read_text(errors="replace").splitlines()[-n:]
    return f"\n--- {log} (last {len(lines)} lines) ---\n" + "\n".join(lines)


def _http_ok(url: str, headers: dict | None = None, timeout: float = 2.0) -> bool:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return resp.status == 200


def _kill_group(pgid: int, grace: float = 5.0) -> None:
    _kill_groups([pgid], grace)


def _kill_groups(pgids: list[int], grace: float = 5.0) -> None:
    """SIGTERM process groups we started, then SIGKILL what is still there after `grace` s."""
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_group_alive(g) for g in pgids):
        time.sleep(0.2)
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # zombies of our own children still count as "in the group": ignore them
    return any(_pgid(p) == pgid and _live(p) for p in psutil.process_iter())


def _pgid(p: psutil.Process) -> int | None:
    try:
        return os.getpgid(p.pid)
    except (ProcessLookupError, PermissionError):
        return None


# ---------------------------------------------------------------------------------------- S3

@dataclass
class S3:
    endpoint: str
    bucket: str
    env: dict

    def uri(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix.lstrip('/')}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.env["AWS_DEFAULT_REGION"],
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@contextlib.contextmanager
def s3_server(bucket: str = "vlmsweep-test") -> Iterator[S3]:
    """moto's S3 API server on 127.0.0.1:<free port> (threads in this process), with `bucket`.
    S3-compatible clients (boto3, pyarrow.fs.S3FileSystem, MLflow) find it through the
    standard AWS variables in `.env` alone: AWS_ENDPOINT_URL and the credentials."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)      # one log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://{HOST}:{port}"
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
        s3 = S3(endpoint, bucket, env)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()


# ---------------------------------------------------------------------------------- PostgreSQL

def pg_bin_dir() -> Path:
    """Where Debian's PostgreSQL programs are: /usr/lib/postgresql/<newest>/bin, or initdb's
    directory on PATH (resolved through symlinks, so pg_ctl and createdb are found next to it)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")])
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    raise RuntimeError("PostgreSQL is not installed here (no initdb on PATH or in /usr/lib/postgresql/*/bin): "
                       "install Debian's `postgresql` package (`make system-deps` does, as root)")


@contextlib.contextmanager
def postgres_db(name: str = "mlflow") -> Iterator[str]:
    """A throwaway PostgreSQL cluster: initdb in a temp dir, `pg_ctl start` on 127.0.0.1:<free port>
    with its unix socket in that dir, one database. Yields its SQLAlchemy URL. As root, the
    server runs as the `postgres` system user (initdb refuses root)."""
    bindir = pg_bin_dir()
    as_user: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="vlmsweep-pg-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(tmp, "postgres", "postgres")
    data, log, port = tmp / "data", tmp / "postgres.log", free_port()

    def run(*cmd):
        out = subprocess.run([*as_user, *map(str, cmd)], capture_output=True, text=True, cwd=tmp, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout}{out.stderr}"
                               f"{_tail(log)}")
        return out

    pid = None
    try:
        run(bindir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        run(bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o",
            f"-h {HOST} -p {port} -k {tmp} -c fsync=off -c synchronous_commit=off -c full_page_writes=off", "start")
        pid = int((data / "postmaster.pid").read_text().split()[0])
        run(bindir / "createdb", "-h", HOST, "-p", port, "-U", "postgres", name)
        yield f"postgresql://postgres@{HOST}:{port}/{name}"
    finally:
        if pid is not None:
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, cwd=tmp, timeout=60)
            if psutil.pid_exists(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


def have_postgres() -> bool:
    try:
        pg_bin_dir()
        return True
    except RuntimeError:
        return False


@contextlib.contextmanager
def tracking_backend(tmp: str | Path) -> Iterator[str]:
    """The tracking server's backend store: PostgreSQL where the machine has Debian's
    postgresql package, else a sqlite file in `tmp`."""
    if have_postgres():
        with postgres_db() as url:
            yield url
    else:
        yield f"sqlite:///{Path(tmp).resolve() / 'mlflow.db'}"


# ------------------------------------------------------------------------------------- MLflow

@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts_destination: str, env: dict | None = None,
                  log_dir: str | Path | None = None) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1:<free port> in its own process group: runs and metrics in
    `backend_uri` (postgresql://… or sqlite:///…), artifacts proxied by the server
    (--serve-artifacts is MLflow's default) to `artifacts_destination` (s3://bucket/mlflow),
    reached with the AWS variables in `env`. Yields the tracking URI http://127.0.0.1:PORT.

    MLflow 3's security middleware allows Host headers of localhost and private IPs by
    default, and 127.0.0.1 is among them: no --allowed-hosts needed on loopback."""
    port = free_port()
    own_dir = log_dir is None
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="vlmsweep-mlflow-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "mlflow-server.log"
    # no GenAI job runner: it is a second process, and its queue dir in /dev/shm outlives the server
    full_env = {**os.environ, **(env or {}), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri,
           "--artifacts-destination", artifacts_destination, "--host", HOST, "--port", str(port), "--workers", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=log_dir,
                                start_new_session=True)
    try:
        uri = f"http://{HOST}:{port}"
        _wait(lambda: _http_ok(f"{uri}/health"), 120, "mlflow server", proc, log)
        yield uri
    finally:
        _kill_group(proc.pid)
        proc.wait(timeout=10)
        if own_dir:
            shutil.rmtree(log_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------- Ray

@dataclass
class RayNode:
    index: int
    proc: subprocess.Popen
    temp_dir: Path
    log: Path
    removed: bool = False

    @property
    def pgid(self) -> int:
        return self.proc.pid              # started with start_new_session: it leads its group


@dataclass
class RayCluster:
    gcs_address: str                      # 127.0.0.1:PORT, for ray.init(address=...) and `ray start`
    dashboard_url: str                    # http://127.0.0.1:PORT, for the Jobs API
    token: str
    token_path: Path
    env: dict                             # what a client needs: RAY_AUTH_MODE=token + RAY_AUTH_TOKEN_PATH
    temp_dir: Path
    nodes: list[RayNode] = field(default_factory=list)
    marker: str = ""

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def alive_nodes(self) -> list[dict]:
        """The cluster's ALIVE nodes, from the dashboard's state API (needs the token)."""
        req = urllib.request.Request(f"{self.dashboard_url}/api/v0/nodes?limit=1000&detail=false",
                                     headers=self.headers())
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback only
            rows = json.loads(resp.read())["data"]["result"]["result"]
        return [r for r in rows if r.get("state") == "ALIVE"]

    def wait_for_nodes(self, n: int, timeout: float = 60) -> None:
        _wait(lambda: len(self.alive_nodes()) == n, timeout, f"{n} alive Ray node(s)")

    def node_of(self, node_id: str) -> int | None:
        """Our index of the node with this Ray node id (from its `vlmsweep_test_node_<i>` resource)."""
        req = urllib.request.Request(f"{self.dashboard_url}/api/v0/nodes?limit=1000&detail=true", headers=self.headers())
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback only
            rows = json.loads(resp.read())["data"]["result"]["result"]
        for row in rows:
            if row.get("node_id") == node_id:
                tags = [k for k in (row.get("resources_total") or {}) if k.startswith(NODE_RESOURCE)]
                return int(tags[0][len(NODE_RESOURCE):]) if tags else None
        return None

    def actor_nodes(self, class_name: str) -> set[int]:
        """Our indices of the nodes where ALIVE actors of this class run (e.g. RayTrainWorker)."""
        req = urllib.request.Request(f"{self.dashboard_url}/api/v0/actors?limit=10000&detail=false",
                                     headers=self.headers())
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback only
            rows = json.loads(resp.read())["data"]["result"]["result"]
        return {self.node_of(r["node_id"]) for r in rows
                if r.get("state") == "ALIVE" and class_name in (r.get("class_name") or "")}

    def remove_node(self, i: int) -> None:
        """Take node `i` (1.. for worker nodes; 0 is the head) away at once: SIGKILL its
        process group, then every process of that node that outlived it (workers in their own
        process groups)."""
        node = self.nodes[i]
        procs = _tree(node.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.proc.wait(timeout=10)
        _kill_procs(procs + [p for p in _procs_with(self.marker) if _env(p).get(NODE_VAR) == str(i)])
        node.removed = True

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster: the nodes' process trees and groups (Ray renames
        its agents and workers, which hides their environment, so the tree and group find
        them), and whatever carries the cluster's marker variable (job drivers, orphans)."""
        found = {}
        groups = {n.pgid for n in self.nodes}
        for n in self.nodes:
            for p in _tree(n.proc.pid):
                found[p.pid] = p
        for p in psutil.process_iter():
            if p.pid != os.getpid() and (_pgid(p) in groups or _env(p).get(MARKER_VAR) == str(self.temp_dir)):
                found[p.pid] = p
        return [p for p in found.values() if _live(p)]


MARKER_VAR = "VLMSWEEP_TEST_RAY_CLUSTER"   # in every node's environment: the cluster's temp dir
NODE_VAR = "VLMSWEEP_TEST_RAY_NODE"        # the node's index


def _env(p: psutil.Process) -> dict:
    try:
        return p.environ()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return {}


def _live(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _procs_with(marker: str) -> list[psutil.Process]:
    """Processes whose environment carries this cluster's marker."""
    key, _, value = marker.partition("=")
    return [p for p in psutil.process_iter() if p.pid != os.getpid() and _env(p).get(key) == value and _live(p)]


def _kill_procs(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def _ray_start(args: list[str], env: dict, temp_dir: Path, log: Path) -> subprocess.Popen:
    """`ray start --block ARGS` in its own process group (through `_loopback_ray_start` below)."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, __file__, "ray-start", "--block", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=temp_dir, start_new_session=True)


def _loopback_ray_start(argv: list[str]) -> None:
    """`ray start ARGV`, with this node's IP 127.0.0.1 so that its GCS and raylet listen on
    loopback only (Ray binds gRPC servers to 127.0.0.1 only when the node IP is 127.0.0.1).

    Ray rewrites 127.0.0.1 into the machine's outward IP unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
    is 0 (ray/_private/services.py: resolve_ip_for_localhost → get_node_ip_address), and every
    process of the cluster gets that 0 in its environment. But `ray start --address` refuses to
    start a worker node when it is 0 (ray/scripts/scripts.py, "Multi-node Ray clusters are not
    supported on Windows and OSX"): here, only for this launcher process, the flag reads 1 and
    the outward-IP lookup answers 127.0.0.1, which is what the flag being 0 would have given."""
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services

    ray_constants.ENABLE_RAY_CLUSTER = True
    services.node_ip_address_from_perspective = lambda *_args, **_kw: HOST
    from ray.scripts.scripts import main

    sys.argv = ["ray", "start", *argv]
    main()


def _node_ports() -> list[str]:
    """Every port a node opens, chosen free here: nodes on one machine must not collide on
    Ray's fixed defaults (dashboard agent 52365, worker ports 10002+), nor with other clusters."""
    return ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
            "--min-worker-port", "0", "--max-worker-port", "0"]


@contextlib.contextmanager
def ray_cluster(nodes: int = 3, cpus_per_node: int = 1, env: dict | None = None,
                object_store_mb: int = 100, timeout: float = 120, node_caches: bool = False,
                head_cpus: int | None = None) -> Iterator[RayCluster]:
    """A Ray cluster of `nodes` nodes on this machine (node 0 the head), token auth ON.

    Each node is `ray start --block` in its own process group with its own --temp-dir. The
    token is generated here and written to a file in the cluster's temp dir, which every node
    reads through RAY_AUTH_TOKEN_PATH (with RAY_AUTH_MODE=token): the user's ~/.ray/auth_token is
    never read nor written (RAY_AUTH_TOKEN_PATH takes precedence over it, and RAY_AUTH_TOKEN is
    removed from the nodes' environment since it would take precedence over both).
    `env` (AWS_*, MLFLOW_TRACKING_URI, ...) is put in every node's environment, so Ray workers
    and job drivers inherit it; the test process's own AWS_*, MLFLOW_* and VLMSWEEP_* variables
    are not (a node knows only what `env` says). With `node_caches`, each node gets its own
    VLMSWEEP_CACHE (node<i>/cache in the cluster's temp dir), as separate machines would.
    The venv's bin comes first on the nodes' PATH, so a job's `python` is this venv's.
    `head_cpus` (default cpus_per_node): 0 keeps training off the head, as on clusters whose head
    only schedules. Node i carries the custom resource `vlmsweep_test_node_<i>` (see node_of).
    """
    tmp = Path(tempfile.mkdtemp(prefix="vlmsweep-ray-"))
    token = secrets.token_hex(32)
    token_path = tmp / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    marker = f"{MARKER_VAR}={tmp}"
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "AWS_", "MLFLOW_", "VLMSWEEP_"))}
    base_env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    base_env.update(env or {})
    base_env.update({
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path),
        "RAY_USAGE_STATS_ENABLED": "0", marker.partition("=")[0]: marker.partition("=")[2],
        "PYTHONUNBUFFERED": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    })
    gcs_port, dash_port = free_port(), free_port()
    gcs = f"{HOST}:{gcs_port}"
    cluster = RayCluster(gcs, f"http://{HOST}:{dash_port}", token, token_path,
                         {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path),
                          # else a client rewrites 127.0.0.1 into the outward IP, where nothing listens
                          "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, tmp, marker=marker)
    def common(i: int) -> list[str]:
        cpus = cpus_per_node if i or head_cpus is None else head_cpus
        return ["--num-cpus", str(cpus), "--num-gpus", "0", "--resources", json.dumps({f"{NODE_RESOURCE}{i}": 1}),
                "--object-store-memory", str(object_store_mb * 1024 * 1024), "--disable-usage-stats"]

    def node_env(i: int) -> dict:
        cache = {"VLMSWEEP_CACHE": str(tmp / f"node{i}" / "cache")} if node_caches else {}
        return {**base_env, NODE_VAR: str(i), **cache}

    try:
        head_dir = tmp / "node0"
        head_env = node_env(0)
        head = _ray_start(["--head", "--port", str(gcs_port), "--temp-dir", str(head_dir),
                           "--dashboard-host", HOST, "--dashboard-port", str(dash_port), "--include-dashboard", "true",
                           "--ray-client-server-port", str(free_port()), *_node_ports(), *common(0)],
                          head_env, head_dir, tmp / "node0.log")
        cluster.nodes.append(RayNode(0, head, head_dir, tmp / "node0.log"))
        _wait(lambda: _http_ok(f"{cluster.dashboard_url}/api/gcs_healthz"), timeout, "Ray head (GCS + dashboard)",
              head, tmp / "node0.log")
        for i in range(1, nodes):
            node_dir = tmp / f"node{i}"
            proc = _ray_start(["--address", gcs, "--temp-dir", str(node_dir), *_node_ports(), *common(i)],
                              node_env(i), node_dir, tmp / f"node{i}.log")
            cluster.nodes.append(RayNode(i, proc, node_dir, tmp / f"node{i}.log"))
        _wait(lambda: len(cluster.alive_nodes()) == nodes, timeout, f"{nodes} alive Ray nodes",
              log=tmp / f"node{nodes - 1}.log")
        yield cluster
    finally:
        ours = cluster.processes()                 # before the kill: its trees still hang together
        _kill_groups([n.pgid for n in cluster.nodes], grace=3)
        for node in cluster.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(timeout=10)
        _kill_procs([p for p in ours if _live(p)] + cluster.processes())
        still = [p for p in ours if _live(p)] + cluster.processes()
        shutil.rmtree(tmp, ignore_errors=True)
        if still:
            raise RuntimeError(f"Ray cluster teardown left processes: {[(p.pid, p.name()) for p in still]}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["ray-start"]:
        _loopback_ray_start(sys.argv[2:])
    else:
        sys.exit("usage: python tests/realparts.py ray-start [ray start options]")
