"""Where a training stage's CPU goes: CPU-seconds per kind of process over one variant's run.

Runs `vlmsweep run experiments/smoke/variant.yaml` (2 training stages and an evaluation, fresh
work dir) while sampling /proc every 0.1 s, and sums each process's CPU time under its last
Ray name (`ray::TrainController`, `ray::RayTrainWorker`, ...: Ray names a worker process after
the actor or task it runs). Processes that were running before the run started (another
user's work) are left out.

Why: on 2 cores a stage's overhead (wall minus loop, bench/grid.py) is bounded below by the
CPU its processes burn before and after the loop, divided by the cores. This prints that bound.

    .venv/bin/python bench/stage_cpu.py [VARIANT.yaml] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_and_name(pid: str) -> tuple[float, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS, cmd


def _kind(cmd: str) -> str:
    if m := re.search(r"ray::(\w+)", cmd):
        return f"ray::{m.group(1)}"
    if "vlmsweep.cli" in cmd:
        return "the sweep's driver"
    if "default_worker.py" in cmd:
        return "Ray worker (before its first task)"
    for part in ("gcs_server", "raylet", "dashboard", "runtime_env", "log_monitor", "monitor.py"):
        if part in cmd:
            return f"Ray system: {part}"
    return cmd.split()[0].rsplit("/", 1)[-1] if cmd.strip() else "?"


class Sampler(threading.Thread):
    """Each new process's CPU time, and the most specific name it showed (IDLE is not one)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.before = {p for p in os.listdir("/proc") if p.isdigit()} | {str(os.getpid())}
        self.cpu: dict[str, float] = {}
        self.kind: dict[str, str] = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid in self.before:
                    continue
                got = _cpu_and_name(pid)
                if got is None:
                    continue
                self.cpu[pid] = got[0]
                kind = _kind(got[1])
                # a worker process shows default_worker.py, then ray::IDLE, then its actor's name;
                # an exited one shows an empty command line
                if pid not in self.kind or (kind.startswith("ray::") and kind != "ray::IDLE"):
                    self.kind[pid] = kind
            time.sleep(0.1)


def main() -> None:
    argv = sys.argv[1:]
    variant = next((a for a in argv if a.endswith((".yaml", ".yml"))), "experiments/smoke/variant.yaml")
    extra = [a for a in argv if a != variant]
    sampler = Sampler()
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "vlmsweep.cli", "run", variant, "--work-dir", f"{tmp}/work",
                              *extra], capture_output=True, text=True, cwd=ROOT, env=env, check=False)
        wall = time.perf_counter() - start
        time.sleep(0.5)
        sampler.stop.set()
        sampler.join()
        if out.returncode != 0:
            raise SystemExit(f"the run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        manifests = [json.loads(p.read_text()) for p in Path(tmp, "work", "stages").glob("*/manifest.json")]
    totals: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for pid, cpu in sampler.cpu.items():
        totals[sampler.kind[pid]][0] += cpu
        totals[sampler.kind[pid]][1] += 1
    cores = os.cpu_count() or 1
    print(f"{variant}: {wall:.1f} s wall on {cores} cores; CPU-seconds by kind of process:")
    for kind, (cpu, n) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        print(f"  {cpu:6.1f}  {n:3d} process(es)  {kind}")
    total = sum(c for c, _ in totals.values())
    loops = [m for m in manifests if m.get("wall_s") is not None]
    print(f"  {total:6.1f}  in all: {total / wall:.2f} cores busy on average")
    walls = ", ".join(f"{m['wall_s']:.1f}" for m in loops)
    setups = ", ".join(f"{m.get('setup_s') or 0:.1f}" for m in loops)
    print(f"{len(loops)} training stages: loops {walls} s wall; rank 0 from process start to first step {setups} s")


if __name__ == "__main__":
    main()
