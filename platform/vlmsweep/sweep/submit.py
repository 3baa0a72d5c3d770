"""`vlmsweep submit` and `vlmsweep jobs`: a sweep's driver as a Ray Job (Jobs API), and its jobs.

What travels in the job's runtime_env:
- vlmsweep itself, as `py_modules` (this package's directory, uploaded through the
  dashboard like a working_dir; with token auth the upload carries the same bearer token
  as every other Jobs API request). Not a wheel: nothing to build or pip-install per job,
  and the cluster's image (clusters/Dockerfile) already has vlmsweep's dependencies; the
  shipped copy comes first on the driver's and workers' PYTHONPATH, so the code that runs
  is the code that was submitted even where the image holds an older vlmsweep.
- the grid file and the `base:` files it extends, as the job's `working_dir` (a temp
  folder holding just those files, in their relative layout; an absolute `base:` path is
  rewritten as a relative one on its own line, so file:line messages still point right);
- the environment workers need (`ray_cluster.worker_env()`: tracking URI, AWS_*, quiet
  progress bars, Ray Train V2, VLMSWEEP_*) plus VLMSWEEP_WORK_DIR. Never the Ray token: the
  cluster's nodes have their own.

One sweep is one submission-id prefix, `vlmsweep-<grid name>-<8 hex of sha256(work dir)>`,
and each submission an attempt `-<n>` of it (Ray refuses a reused submission id). While an
attempt is PENDING or RUNNING, `submit` says so and submits nothing; after one ended (its
driver died, was stopped, failed or finished), it submits the next attempt with --resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .ray_cluster import ClusterError, auth_headers, check_tracking, probe_dashboard, worker_env

ACTIVE = ("PENDING", "RUNNING")
ENDED = ("STOPPED", "SUCCEEDED", "FAILED")
REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "file")
ADDRESS_ENV = ("VLMSWEEP_JOBS_ADDRESS", "RAY_API_SERVER_ADDRESS")


# --------------------------------------------------------------------------------- the client

def jobs_address(address: str | None) -> str:
    """The dashboard URL of the Jobs API: --address, else $VLMSWEEP_JOBS_ADDRESS, else
    $RAY_API_SERVER_ADDRESS (what Ray's own `ray job` CLI reads)."""
    given = address or next((os.environ[v] for v in ADDRESS_ENV if os.environ.get(v)), None)
    if not given:
        raise ClusterError([("--address", "give the cluster's dashboard address, e.g. --address http://HEAD:8265 "
                                          "(or set VLMSWEEP_JOBS_ADDRESS)")])
    if "://" not in given:
        given = f"http://{given}"
    if not given.startswith(("http://", "https://")):
        raise ClusterError([("--address", f"{given} is not a dashboard address: give http://HEAD:8265 "
                                          "(the Jobs API), not a ray:// or GCS address")])
    return given.rstrip("/")


def jobs_client(address: str | None):
    """A JobSubmissionClient for the cluster, after one quick authenticated probe: an
    unreachable cluster or a refused token is a one-line ClusterError, not a hang or a
    traceback. The bearer token (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token)
    is passed as an explicit header."""
    url = jobs_address(address)
    headers = auth_headers()
    probe_dashboard(url, headers)
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(url, headers=headers)
    except Exception as err:  # noqa: BLE001 - ConnectionError, AuthenticationError, RuntimeError
        raise ClusterError([("--address", f"cannot use the Jobs API at {url}: {_first_line(err)}")]) from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _status(job) -> str:
    return str(getattr(job.status, "value", job.status)).rsplit(".", 1)[-1]


# -------------------------------------------------------------------------------- submission

@dataclass
class Submission:
    submission_id: str
    attempt: int
    already_running: bool
    status: str
    url: str


def sweep_prefix(grid_name: str, work_dir: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", grid_name).strip("-") or "grid"
    return f"vlmsweep-{slug}-{hashlib.sha256(work_dir.encode()).hexdigest()[:8]}"


def cluster_work_dir(work_dir: str | None) -> str:
    """The work dir every node reaches: a URI (s3://, gs://, ...) or an absolute path on a
    mount that every node shares; never a relative path (relative to what, on a node?)."""
    given = work_dir or os.environ.get("VLMSWEEP_WORK_DIR")
    field = "--work-dir" if work_dir or not os.environ.get("VLMSWEEP_WORK_DIR") else "VLMSWEEP_WORK_DIR"
    if not given:
        raise ClusterError([("--work-dir", "a sweep on a cluster needs a work dir every node reaches: "
                                           "--work-dir s3://BUCKET/PREFIX (or gs://..., or an absolute path "
                                           "on a shared mount)")])
    scheme, sep, rest = given.partition("://")
    if sep:
        if scheme.lower() not in REMOTE_SCHEMES:
            raise ClusterError([(field, f"{given}: unknown scheme {scheme!r}; use one of "
                                        f"{', '.join(s + '://' for s in REMOTE_SCHEMES)}")])
        if scheme.lower() == "file" and not rest.startswith("/"):
            raise ClusterError([(field, f"{given}: a file:// work dir needs an absolute path (file:///shared/x)")])
        return given.rstrip("/") if rest.strip("/") else given
    if not os.path.isabs(given):
        raise ClusterError([(field, f"{given} is a relative path: on a cluster the work dir must be a URI "
                                    "(s3://BUCKET/PREFIX, gs://...) or an absolute path on a shared mount")])
    return os.path.normpath(given)


def bundle_grid(grid_path: str | Path, dest: Path) -> Path:
    """Copy the grid file and the chain of `base:` files it extends into `dest`, keeping their
    relative layout; returns the grid's path relative to `dest`."""
    files: list[Path] = []
    absolute: set[Path] = set()         # files whose `base:` is an absolute path
    path: Path | None = Path(grid_path).resolve()
    while path is not None and path not in files:
        files.append(path)
        data = yaml.safe_load(path.read_text()) or {}
        base = data.get("base") if isinstance(data, dict) else None
        if base and os.path.isabs(str(base)):
            absolute.add(path)
        path = (path.parent / str(base)).resolve() if base else None
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    for i, f in enumerate(files):
        text = f.read_text()
        if f in absolute and i + 1 < len(files):  # its base, rewritten relative to it (same line)
            line = f"base: {json.dumps(os.path.relpath(files[i + 1], f.parent))}"
            text = re.sub(r"(?m)^base:[ \t]*\S.*$", lambda _m, line=line: line, text, count=1)
        target = dest / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return files[0].relative_to(root)


def _package_dir() -> str:
    import vlmsweep

    return str(Path(vlmsweep.__file__).resolve().parent)


def entrypoint(grid_rel: str, work_dir: str, *, resume: bool, sets: list[str], variant: str | None,
               max_concurrent: int | None, retries: int | None) -> str:
    cmd = ["python", "-m", "vlmsweep.cli", "sweep", grid_rel, "--work-dir", work_dir]
    if resume:
        cmd.append("--resume")
    for pair in sets:
        cmd += ["--set", pair]
    if variant:
        cmd += ["--variant", variant]
    if max_concurrent is not None:
        cmd += ["--max-concurrent", str(max_concurrent)]
    if retries is not None:
        cmd += ["--retries", str(retries)]
    return shlex.join(cmd)


def submit_sweep(grid_path: str, grid_name: str, *, address: str | None, work_dir: str | None,
                 sets: list[str] | None = None, variant: str | None = None, max_concurrent: int | None = None,
                 retries: int | None = None) -> Submission:
    """Submit the sweep's driver as a Ray Job, unless an attempt of this sweep is still active."""
    work = cluster_work_dir(work_dir)
    check_tracking(os.environ.get("MLFLOW_TRACKING_URI"), True)
    client = jobs_client(address)
    url = jobs_address(address)
    prefix = sweep_prefix(grid_name, work)
    attempts = {}
    for job in _list_jobs(client, url):
        m = re.fullmatch(re.escape(prefix) + r"-(\d+)", job.submission_id or "")
        if m:
            attempts[int(m.group(1))] = job
    for n in sorted(attempts, reverse=True):
        if _status(attempts[n]) in ACTIVE:
            return Submission(attempts[n].submission_id, n, True, _status(attempts[n]), url)
    attempt = max(attempts, default=0) + 1
    submission_id = f"{prefix}-{attempt}"
    with tempfile.TemporaryDirectory(prefix="vlmsweep-submit-") as tmp:
        grid_rel = bundle_grid(grid_path, Path(tmp)).as_posix()
        command = entrypoint(grid_rel, work, resume=attempt > 1, sets=list(sets or []), variant=variant,
                             max_concurrent=max_concurrent, retries=retries)
        runtime_env = {
            "working_dir": tmp,
            "py_modules": [_package_dir()],
            "excludes": ["__pycache__", "*.pyc"],
            "env_vars": {**worker_env(), "VLMSWEEP_WORK_DIR": work},
        }
        metadata = {"vlmsweep.grid": grid_name, "vlmsweep.work_dir": work, "vlmsweep.attempt": str(attempt)}
        try:
            client.submit_job(entrypoint=command, submission_id=submission_id, runtime_env=runtime_env,
                              metadata=metadata)
        except Exception as err:  # noqa: BLE001
            if "already exists" in str(err):     # another `submit` of this sweep won the race
                return Submission(submission_id, attempt, True, "PENDING", url)
            raise ClusterError([("--address", f"the Jobs API at {url} refused the submission: "
                                              f"{_first_line(err)}")]) from None
    return Submission(submission_id, attempt, False, "PENDING", url)


def _list_jobs(client, url: str) -> list:
    try:
        return client.list_jobs()
    except Exception as err:  # noqa: BLE001
        raise ClusterError([("--address", f"cannot list the jobs at {url}: {_first_line(err)}")]) from None


# ------------------------------------------------------------------------------------- jobs

def job_info(client, job_id: str, url: str):
    try:
        return client.get_job_info(job_id)
    except Exception as err:  # noqa: BLE001 - RuntimeError with the server's 404
        if "404" in str(err) or "does not exist" in str(err):
            raise ClusterError([("JOB_ID", f"no job {job_id!r} on {url}: `vlmsweep jobs list` shows them")]) from None
        raise ClusterError([("--address", f"cannot read job {job_id!r} at {url}: {_first_line(err)}")]) from None


def list_table(client, url: str, every: bool = False) -> str:
    jobs = [j for j in _list_jobs(client, url) if every or (j.submission_id or "").startswith("vlmsweep-")]
    jobs.sort(key=lambda j: j.start_time or 0)
    if not jobs:
        return f"no {'' if every else 'vlmsweep '}jobs on {url}"
    rows = [("SUBMISSION ID", "STATUS", "STARTED", "MESSAGE")]
    for j in jobs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.start_time / 1000)) if j.start_time else "-"
        rows.append((j.submission_id or j.job_id or "-", _status(j), started, (j.message or "").splitlines()[0][:60]
                     if j.message else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows)


def status_text(job) -> str:
    lines = [f"{job.submission_id}: {_status(job)}"]
    if job.message:
        lines.append(f"  message:    {job.message.strip().splitlines()[0]}")
    if job.start_time:
        lines.append(f"  started:    {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(job.start_time / 1000))}")
    if job.end_time:
        lines.append(f"  ended:      {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(job.end_time / 1000))}")
    lines.append(f"  entrypoint: {job.entrypoint}")
    return "\n".join(lines)


def print_logs(client, job_id: str, url: str, follow: bool = False, out=None) -> None:
    import sys

    out = out or sys.stdout
    job_info(client, job_id, url)
    if not follow:
        out.write(client.get_job_logs(job_id))
        out.flush()
        return
    import asyncio

    async def tail():
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        pass


def stop_job(client, job_id: str, url: str, wait_s: float = 30) -> str:
    """Ask Ray to stop the job; wait (up to `wait_s`) until it has ended. Returns its status."""
    job = job_info(client, job_id, url)
    if _status(job) in ENDED:
        return _status(job)
    try:
        client.stop_job(job_id)
    except Exception as err:  # noqa: BLE001
        raise ClusterError([("JOB_ID", f"cannot stop {job_id!r} at {url}: {_first_line(err)}")]) from None
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        status = _status(job_info(client, job_id, url))
        if status in ENDED:
            return status
        time.sleep(0.5)
    return _status(job_info(client, job_id, url))
