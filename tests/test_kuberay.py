"""The KubeRay deployment: clusters/kuberay-rayjob.yaml and the image it runs (clusters/Dockerfile).

Nothing here builds an image or talks to Kubernetes. The manifest and the Dockerfile are
checked statically against each other (same image, same Ray version, token auth on, every
pod sees S3 and MLflow), and the RayJob's entrypoint is dry-run as the pod would run it:
same argv, cwd = the repository (the image's WORKDIR holds the same files), the manifest's
environment, and S3 served by a moto server on loopback standing in for the bucket.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "clusters/kuberay-rayjob.yaml"
DOCKERFILE = ROOT / "clusters/Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENTRYPOINT = "vlmsweep sweep experiments/paper/tinyllava.yaml --work-dir s3://vlmsweep-runs/tinyllava --resume"
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.match(r"(\d+)\.(\d+)\.(\d+)", text).groups())


@pytest.fixture(scope="module")
def job() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    """The Dockerfile's instructions, one string each (continuation lines joined, comments dropped)."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current = f"{current} {line}" if current else line
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        lines.append(current)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return lines


def _cluster(job: dict) -> dict:
    return job["spec"]["rayClusterSpec"]


def _groups(job: dict) -> list[dict]:
    cluster = _cluster(job)
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def _containers(job: dict) -> list[dict]:
    return [c for g in _groups(job) for c in g["template"]["spec"]["containers"]]


def _instructions(dockerfile: list[str], name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in dockerfile if line.split(None, 1)[0].upper() == name]


def _runtime_env(job: dict) -> dict:
    return yaml.safe_load(job["spec"]["runtimeEnvYAML"])


# --- the manifest ---------------------------------------------------------------------------

def test_manifest_is_a_rayjob_whose_entrypoint_sweeps_into_s3(job):
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].strip() == ENTRYPOINT
    argv = shlex.split(job["spec"]["entrypoint"])
    work_dir = argv[argv.index("--work-dir") + 1]
    assert work_dir.startswith("s3://"), work_dir
    assert "--resume" in argv
    assert (ROOT / argv[2]).is_file(), f"the entrypoint's grid {argv[2]} is not in the repository"


def test_token_auth_is_on_with_a_ray_version_that_has_it(job):
    cluster = _cluster(job)
    assert cluster["authOptions"]["mode"] == "token"
    # KubeRay refuses authOptions.mode=token without a rayVersion >= 2.52.0
    assert _version(str(cluster["rayVersion"])) >= (2, 52, 0)


def test_head_schedules_nothing_and_a_worker_group_has_gpus(job):
    cluster = _cluster(job)
    assert str(cluster["headGroupSpec"]["rayStartParams"]["num-cpus"]) == "0"
    gpu_groups = [g for g in cluster["workerGroupSpecs"]
                  if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                         for c in g["template"]["spec"]["containers"])]
    assert gpu_groups, "no worker group asks for nvidia.com/gpu"


def test_every_container_reaches_mlflow_and_s3(job):
    """Workers read and write the S3 work dir and log metrics to MLflow, not only the head."""
    containers = _containers(job)
    assert len(containers) >= 2
    for c in containers:
        env = {e["name"]: e for e in c.get("env", [])}
        assert env.get("MLFLOW_TRACKING_URI", {}).get("value", "").startswith("http://"), c["name"]
        assert env.get("RAY_DATA_DISABLE_PROGRESS_BARS", {}).get("value") == "1", c["name"]
        for name in AWS_VARS:
            assert name in env, f"{c['name']} lacks {name}"
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "value" not in env[name], f"{c['name']}: {name} is written in the manifest"
            assert env[name]["valueFrom"]["secretKeyRef"]["name"], c["name"]
        if "AWS_ENDPOINT_URL" in env:  # MinIO: from the same Secret, optional
            assert env["AWS_ENDPOINT_URL"]["valueFrom"]["secretKeyRef"].get("optional") is True
    # every container: the same settings
    first = containers[0].get("env")
    assert all(c.get("env") == first for c in containers[1:])


def test_the_jobs_runtime_env_carries_the_settings_but_no_credentials(job):
    runtime_env = _runtime_env(job)
    env_vars = runtime_env["env_vars"]
    container_env = {e["name"]: e.get("value") for e in _containers(job)[0]["env"]}
    assert env_vars["MLFLOW_TRACKING_URI"] == container_env["MLFLOW_TRACKING_URI"]
    assert str(env_vars["RAY_DATA_DISABLE_PROGRESS_BARS"]) == "1"
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env_vars)


# --- the image ------------------------------------------------------------------------------

def test_dockerfile_starts_from_a_cuda_torch_image(dockerfile):
    (base,) = _instructions(dockerfile, "FROM")
    m = re.fullmatch(r"pytorch/pytorch:(\d+)\.\d+\.\d+-cuda(\d+)\.\d+-cudnn\d+-(runtime|devel)", base)
    assert m, base
    assert int(m.group(1)) == 2 and int(m.group(2)) >= 12


def test_dockerfile_installs_this_repository_without_replacing_torch(dockerfile):
    copies = " ".join(_instructions(dockerfile, "COPY")).split()
    for needed in ("pyproject.toml", "README.md", "platform/", "experiments/"):
        assert needed in copies, f"the Dockerfile does not copy {needed}"
    runs = " ".join(_instructions(dockerfile, "RUN"))
    assert re.search(r"pip install [^&]*\s\.(\s|$)", runs), "no `pip install .` of the repository"
    assert "--force-reinstall" not in runs and not re.search(r"pip install[^&]*\storch\b", runs)
    assert re.search(r"-c \S+", runs) and "torch==" in runs, "torch is not pinned to the base image's build"


def test_dockerignore_keeps_the_venv_out_but_not_what_the_image_copies():
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    for kept in ("pyproject.toml", "README.md", "platform", "experiments", "platform/vlmsweep/cli.py",
                 "experiments/paper/tinyllava.yaml"):
        assert not any(fnmatch.fnmatch(kept, p) for p in patterns), kept
    for left_out in (".venv", ".git", ".vlmsweep"):
        assert left_out in patterns


def test_manifest_runs_the_image_the_dockerfile_builds(job, dockerfile):
    labels = " ".join(_instructions(dockerfile, "LABEL"))
    title = re.search(r"org\.opencontainers\.image\.title=\"?([\w.-]+)", labels).group(1)
    version = re.search(r"org\.opencontainers\.image\.version=\"?([\w.-]+)", labels).group(1)
    images = {c["image"] for c in _containers(job)}
    assert len(images) == 1, f"head and workers run different images: {images}"
    (image,) = images
    repo, _, tag = image.rpartition(":")
    assert repo.endswith(f"/{title}"), image
    assert tag == version, f"manifest tag {tag} != the image's version label {version}"
    # the same Ray everywhere: the image pins RAY_VERSION, the RayJob declares rayVersion
    (ray_arg,) = [a for a in _instructions(dockerfile, "ARG") if a.startswith("RAY_VERSION=")]
    assert ray_arg.split("=", 1)[1] == str(_cluster(job)["rayVersion"])
    # the entrypoint's relative grid path resolves where the job runs: the image's WORKDIR
    (workdir,) = _instructions(dockerfile, "WORKDIR")
    assert _runtime_env(job).get("working_dir", workdir) == workdir


# --- the entrypoint, dry-run against S3 on loopback ----------------------------------------

@pytest.fixture
def s3_server():
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        yield endpoint, client
    finally:
        server.stop()


def _pod_env(job: dict, endpoint: str, tmp_path: Path) -> dict:
    """The head container's environment as the pod would have it: literal values from the
    manifest, the Secret's values replaced by the moto server's, node-local caches in tmp."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "VLMSWEEP_", "MLFLOW_", "RAY_"))}
    for e in _containers(job)[0]["env"]:
        if "value" in e:
            env[e["name"]] = str(e["value"])
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", HF_HUB_OFFLINE="1",
               VLMSWEEP_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"))
    return env


def test_entrypoint_dry_runs_against_s3(job, s3_server, tmp_path):
    endpoint, s3 = s3_server
    env = _pod_env(job, endpoint, tmp_path)
    # the buckets the pods expect: the work dir's, and the data's if it is on S3 too
    for uri in ("s3://vlmsweep-runs", env.get("VLMSWEEP_DATA", "")):
        if uri.startswith("s3://"):
            s3.create_bucket(Bucket=uri[len("s3://"):].split("/", 1)[0])
    assert env["MLFLOW_TRACKING_URI"].startswith("http://")  # the manifest's server: a dry run must not call it

    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "vlmsweep"
    argv = [sys.executable, "-m", "vlmsweep.cli", *argv[1:], "--dry-run"]
    stray = ROOT / "s3:"  # what a work dir URI mistaken for a local path would create
    existed = stray.exists()
    try:
        out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        created = stray.exists() and not existed
        if created:
            shutil.rmtree(stray)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert not created, "the s3:// work dir was treated as a local folder named 's3:'"
    # a dry run plans only: it reads the bucket (finished stages) and writes nothing there
    assert s3.list_objects_v2(Bucket="vlmsweep-runs").get("KeyCount", 0) == 0
    text = out.stdout
    assert "sweep tinyllava-paper: 12 variant(s)" in text, text[-2000:]
    from vlmsweep.config.grid import load_grid

    names = [v.name for v in load_grid(ROOT / argv[4]).variants]
    assert len(names) == 12 and "TinyLLaVA-share-Sig-Phi" in names
    for name in names:
        assert name in text, f"{name} missing from the plan"
