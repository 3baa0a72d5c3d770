"""Connecting to Ray: an embedded local cluster by default, or an existing one by address.

An existing cluster (Ray ≥ 2.52) has token auth on. A client finds the token where Ray's own
token loader looks, in this order: RAY_AUTH_TOKEN, the file named by RAY_AUTH_TOKEN_PATH,
~/.ray/auth_token (src/ray/rpc/authentication/authentication_token_loader.cc). It sends it
only with RAY_AUTH_MODE=token: `ray.init(address=...)` never turns that on by itself
(ray/_private/worker.py: "an explicit address (argument or RAY_ADDRESS) never does"), so
`ensure_ray` does when a token is there. A client that is refused or can't reach the cluster
fails at once with one line (`ClusterError`) instead of Ray's 20 one-second retries of the
GCS connection (ray/_private/node.py: `_init_gcs_client`) and a traceback.

The driver's environment doesn't reach a remote cluster's workers: what they need
(`worker_env()`) travels in the job's runtime_env instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from vlmsweep.config.errors import ConfigError

AUTH_HELP = ("set RAY_AUTH_MODE=token and give the cluster's token in RAY_AUTH_TOKEN, in a file named by "
             "RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token")

# what every Ray worker of a sweep needs in its environment, whichever node it runs on
WORKER_ENV_DEFAULTS = {
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",          # stage logs, not progress bars
    "RAY_TRAIN_V2_ENABLED": "1",
    # ray.train.report is drained by the controller at this interval (default 2 s): a
    # checkpoint report would otherwise stall every worker for up to 2 s
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    # Ray Train patches `print` in its workers to log through the root logger, and also
    # prints as before when sys.stdout is wrapped (it is, in a Ray worker): every line a
    # stage prints reached the driver twice
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # transformers' "Loading weights" bar (huggingface_hub's switch): in a worker's forwarded
    # log it is two lines of bar per model load, with nothing to watch
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
# Ray Train's PlacementGroupCleaner asks the State API once a second whether the stage's
# controller is still alive. The State API is served by the dashboard, which an embedded
# cluster runs without, so each asking logged "Failed to query Ray Train Controller actor
# state" (90 of the demo's 235 lines). Nothing is lost by not asking: the
# cleaner frees a dead controller's placement group, and an embedded cluster dies with its
# driver. The driver skips forwarded worker lines that match RAY_DEDUP_LOGS_SKIP_REGEX,
# which Ray reads when it is first imported: `configure_driver_logs` sets it before.
EMBEDDED_SKIPPED_LOGS = "Failed to query Ray Train Controller actor state"
# What a stage prints starts with its name ("[finetune] ..."). Ray's log deduplication holds
# back a line that another process printed recently (numbers aside) and prints it seconds
# later, so a finetune's "what trains" table came out with its rows out of order, behind the
# pretrain's equal rows. Lines matching RAY_DEDUP_LOGS_ALLOW_REGEX are printed as they come.
STAGE_LINES = r"^\[[\w-]+\] "
# Ray Train logs each checkpoint report of each rank (a long line with every metric) at INFO.
# The stage's LoggingConfig(WARNING) keeps its other INFO lines out of the sweep's log, but this
# one's logger is named after a file path, not "ray.train...", so the level does not reach it.
# The worker's own log file (Ray's session logs) keeps it.
SKIPPED_TRAIN_LOGS = "Reporting training result [0-9]+: TrainingReport"
# Ray Data logs each execution of a dataset at INFO to the console: its start, its plan and its
# end, in the stage's trial and in every Train worker at each epoch of its shard (22 of the demo's
# 125 lines say "Dataset train_rank0_… execution finished in 0.00 seconds"), a note that progress
# bars are off, and each stage's DatasetManager warns that Ray Train sets a deprecated option.
# None of it is the user's to act on; Ray Data's own log file (the session's logs/ray-data/)
# keeps them all.
SKIPPED_DATA_LOGS = "|".join([
    r"Starting execution of Dataset \S+\. Full logs are in", r"Execution plan of Dataset \S+: ",
    r"Dataset \S+ execution finished in [0-9.]+ seconds", r"Progress bars disabled\. To enable, set",
    r"execution_options\.py:[0-9]+: RayDeprecationWarning", r"^ *self\.exclude_resources = exclude_resources$",
])
WORKER_ENV_NAMES = ("MLFLOW_TRACKING_URI", "DS_ACCELERATOR", "HF_HUB_OFFLINE", "HF_ENDPOINT",
                    "GOOGLE_APPLICATION_CREDENTIALS")
WORKER_ENV_PREFIXES = ("AWS_", "VLMSWEEP_", "MLFLOW_S3_")
# paths on this machine's own disk: each node has its own
NODE_LOCAL_ENV = ("VLMSWEEP_CACHE",)


class ClusterError(ConfigError):
    """A cluster, token or tracking-server problem the user can fix: one line naming the
    option or variable. A ConfigError, so the CLI prints it on one line and exits 2."""

    def _format(self) -> str:
        return "; ".join(f"{field}: {msg}" for field, msg in self.problems)


def worker_env() -> dict[str, str]:
    """The environment variables Ray workers need, to be sent in a runtime_env: the tracking
    URI, S3-compatible storage settings (AWS_*), quiet progress, Ray Train V2, and vlmsweep's
    own settings (VLMSWEEP_*), taken from this process's environment when set there.
    Not VLMSWEEP_CACHE: a node-local path (each node has its own cache). DS_ACCELERATOR only
    when the user set it: otherwise DeepSpeed picks each worker's own (cuda, else cpu)."""
    env = dict(WORKER_ENV_DEFAULTS)
    for key, value in os.environ.items():
        if key in NODE_LOCAL_ENV:
            continue
        if key in WORKER_ENV_DEFAULTS or key in WORKER_ENV_NAMES or key.startswith(WORKER_ENV_PREFIXES):
            env[key] = value
    return env


def check_tracking(tracking_uri: str | None, multi_node: bool) -> None:
    """With a multi-node or remote cluster, runs are written by processes on other machines:
    the tracking URI must be an MLflow tracking server, not a sqlite file or a local folder."""
    if multi_node and not str(tracking_uri or "").startswith(("http://", "https://")):
        shown = tracking_uri or "unset (a sqlite file in the work dir)"
        raise ClusterError([("MLFLOW_TRACKING_URI", f"{shown} is not reachable from the cluster's other nodes: "
                                                    "set MLFLOW_TRACKING_URI to an http(s):// MLflow tracking "
                                                    "server (`mlflow server`, see clusters/README.md)")])


# ------------------------------------------------------------------------------- token auth

def find_token() -> tuple[str | None, str]:
    """(the token, where it came from), looked up as Ray's token loader does. A
    RAY_AUTH_TOKEN_PATH naming a missing or empty file is an error here: Ray itself would
    abort the process (a RAY_CHECK in the token loader)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            token = Path(path).expanduser().read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            token = ""
        if not token:
            raise ClusterError([("RAY_AUTH_TOKEN_PATH", f"{path} is missing or empty: point it to the file "
                                                        "holding the cluster's token")])
        return token, f"RAY_AUTH_TOKEN_PATH={path}"
    default = Path.home() / ".ray" / "auth_token"
    try:
        token = default.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        token = ""
    return (token, str(default)) if token else (None, "")


def use_token_auth() -> str | None:
    """Before connecting to an existing cluster: with RAY_AUTH_MODE unset and a token at hand,
    turn token auth on (RAY_AUTH_MODE=token, for this process and what it starts). Returns the
    token to send, or None when there is none (or RAY_AUTH_MODE says otherwise)."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        return None
    token, _ = find_token()
    if token is None:
        if mode is not None:      # RAY_AUTH_MODE=token with no token: Ray would abort the process
            raise ClusterError([("RAY_AUTH_MODE", f"is 'token' but no token was found: {AUTH_HELP}")])
        return None
    if mode is None:
        os.environ["RAY_AUTH_MODE"] = "token"
        _refresh_ray_config()
    return token


def _refresh_ray_config() -> None:
    """Ray reads RAY_AUTH_MODE into its cached config; re-read it if ray is imported already
    (what ray's own `_enable_token_auth` does after setting the variable)."""
    import sys

    if "ray._raylet" in sys.modules:
        from ray._raylet import Config

        Config.initialize("")


def auth_headers() -> dict[str, str]:
    """HTTP headers for the dashboard / Jobs API: the bearer token when one is at hand.
    Passed explicitly, so they don't depend on RAY_AUTH_MODE having been read by Ray."""
    token = use_token_auth()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _refused(where: str, detail: str = "") -> ClusterError:
    return ClusterError([("--address", f"{where} refused this client's credentials{detail}: {AUTH_HELP}")])


def probe_dashboard(url: str, headers: dict[str, str], timeout: float = 5.0) -> None:
    """One quick authenticated request to the dashboard (the Jobs API's server): unreachable,
    refused or not a Ray dashboard → ClusterError naming what to fix."""
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{url}/api/version", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the user's cluster
            json.loads(resp.read())["ray_version"]
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise _refused(f"the Ray cluster at {url}",
                           " (no token sent)" if not headers else " (the token sent was not accepted)") from None
        raise ClusterError([("--address", f"{url} answered HTTP {err.code}: is it a Ray dashboard "
                                          "(http://HEAD:8265)?")]) from None
    except (urllib.error.URLError, OSError, ValueError, KeyError) as err:
        reason = getattr(err, "reason", err)
        raise ClusterError([("--address", f"cannot reach a Ray dashboard at {url} ({reason}): is the cluster "
                                          "up, and is this its dashboard address (http://HEAD:8265)?")]) from None


_GCS_PROBE = """
import sys
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
try:
    GcsClient(address=sys.argv[1])
except AuthenticationError:
    sys.exit(3)
except Exception as err:
    print(f"{type(err).__name__}: {err}".splitlines()[0], file=sys.stderr)
    sys.exit(4)
"""


def probe_gcs(address: str, timeout: float = 5.0) -> None:
    """One quick connection to the cluster's GCS (HOST:PORT) with this process's credentials,
    instead of ray.init's 20 one-second retries: unreachable or refused → ClusterError.

    The GCS client is tried once, in a child process with short connect timeouts (Ray's
    own wait for a GCS is 30 s and more, and can't be interrupted), so that neither a port
    that isn't a GCS nor the timeouts set for the probe touch this process."""
    import subprocess
    import sys

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            # a GCS speaks gRPC (HTTP/2): an HTTP/1 answer means a web server, most likely the dashboard
            conn.settimeout(2)
            conn.sendall(b"GET /api/version HTTP/1.0\r\n\r\n")
            with contextlib.suppress(OSError):
                if conn.recv(8).startswith(b"HTTP/"):
                    raise ClusterError([("--address", f"{address} is a web server (the dashboard?), not the "
                                                      "cluster's GCS address (HEAD:6379); to submit a sweep to the "
                                                      "dashboard, use `vlmsweep submit --address http://HEAD:8265`")])
    except ClusterError:
        raise
    except (OSError, ValueError) as err:
        raise ClusterError([("--address", f"cannot reach a Ray cluster at {address} ({err}): is the cluster up, "
                                          "and is this its GCS address (HEAD:6379)?")]) from None
    env = {**os.environ, "RAY_gcs_rpc_server_connect_timeout_s": "3", "RAY_py_gcs_connect_timeout_s": "5"}
    try:
        out = subprocess.run([sys.executable, "-c", _GCS_PROBE, address], env=env, capture_output=True, text=True,
                             timeout=30)
    except subprocess.TimeoutExpired:
        out = subprocess.CompletedProcess([], 4, "", "no answer within 30 s")
    if out.returncode == 3:
        raise _refused(f"the Ray cluster at {address}")
    if out.returncode != 0:
        why = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
        raise ClusterError([("--address", f"cannot connect to a Ray cluster at {address} ({why}): is this the "
                                          "cluster's GCS address (HEAD:6379)?")])


# ---------------------------------------------------------------------------------- ensure_ray

def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect this driver to Ray: the cluster at `address` (or $RAY_ADDRESS, which a Ray Job's
    driver has), or else an embedded local one with `num_cpus` CPUs."""
    import ray

    if ray.is_initialized():
        return
    for key, value in WORKER_ENV_DEFAULTS.items():  # an embedded cluster's workers inherit them
        os.environ.setdefault(key, value)
    target = address or os.environ.get("RAY_ADDRESS")
    if not target or target == "local":
        # Ray Train's preemption watcher (an actor per stage) follows node draining by an
        # autoscaler; an embedded cluster is this one machine, which nothing drains
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, configure_logging=True,
                 logging_level="WARNING")
        _keep_data_stats_actor()
        return
    if target.startswith(("http://", "https://")):
        raise ClusterError([("--address", f"{target} is a dashboard / Jobs API address: submit the sweep with "
                                          "`vlmsweep submit GRID --address http://HEAD:8265`, or give the GCS "
                                          "address (HEAD:6379) to run this driver against the cluster")])
    use_token_auth()
    if target != "auto" and not target.startswith("ray://"):
        probe_gcs(target)
    env = worker_env()
    job_env = _job_env_vars()
    if job_env is not None:     # inside a Ray Job's driver: the job's runtime_env has them already
        env = {k: v for k, v in env.items() if k not in job_env}
    try:
        ray.init(address=address or None, log_to_driver=True, runtime_env={"env_vars": env} if env else None)
    except ConnectionError as err:
        raise ClusterError([("--address", f"cannot connect to the Ray cluster at {target}: {err}")]) from None
    _keep_data_stats_actor()


def configure_driver_logs(embedded: bool) -> None:
    """Called by the CLI before anything imports Ray (Ray reads these when it is imported):
    stage lines print in order (STAGE_LINES), Ray Train's report lines and Ray Data's per-execution
    lines are dropped (SKIPPED_TRAIN_LOGS, SKIPPED_DATA_LOGS), and with a cluster of the sweep's own (no --address, no RAY_ADDRESS)
    so are the cleaner's State API failures (EMBEDDED_SKIPPED_LOGS)."""
    os.environ.setdefault("RAY_DEDUP_LOGS_ALLOW_REGEX", STAGE_LINES)
    skipped = [SKIPPED_TRAIN_LOGS, SKIPPED_DATA_LOGS, *([EMBEDDED_SKIPPED_LOGS] if embedded else [])]
    os.environ.setdefault("RAY_DEDUP_LOGS_SKIP_REGEX", "|".join(skipped))


def _keep_data_stats_actor() -> None:
    """Create Ray Data's stats actor from the driver, once per sweep.

    Ray Data creates it on first use (a detached, named actor). First used inside a stage's
    Train worker, it is placed with that stage's placement group and dies when the stage ends,
    so every stage started a new process for it (~1 CPU-second each, measured by bench/grid.py).
    Created here, it lives as long as the cluster. There is no public API for it."""
    try:
        from ray.data._internal.stats import get_or_create_stats_actor
    except ImportError:     # another Ray version: Ray Data creates its own, as before
        return
    get_or_create_stats_actor()


def _job_env_vars() -> dict | None:
    """The env_vars of the Ray Job this driver runs in (None outside a Ray Job)."""
    import json

    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        return (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        return {}
