"""A grid vs its variants run one by one: stage runs and wall time, side by side in one run.

  grid    `vlmsweep sweep GRID` in a fresh work dir: shared stages run once
  alone   `vlmsweep run GRID --variant NAME` for every variant, each in its own fresh work
          dir (as someone running TinyLLaVA Factory's scripts once per variant would)

Both sides generate their own synthetic world and presets, so neither reuses the other's work.
For the grid side it also prints each stage's overhead: the stage's wall time (its MLflow
stage run, from release to the end of its trial) minus its training loop's time (the
manifest's `wall_s`, logged as `stage/wall_s`), with when it started (seconds after the
first stage: overlapping stages ran at once) and `setup_s`, how long its rank-0 worker took
from its process start to its first step (imports, Ray Train's set-up, model, DeepSpeed).
Evaluation stages have no loop: their wall time is listed on its own.

    .venv/bin/python bench/grid.py [experiments/smoke.yaml] [--grid-only] [--keep DIR]

--keep DIR keeps the work dirs (with their MLflow DBs) and the grid's output (grid.log) in DIR,
a new folder, instead of a temporary one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vlmsweep.config.grid import load_any

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "vlmsweep.cli"]


def timed(cmd: list[str], work: Path) -> tuple[float, str]:
    start = time.perf_counter()
    # each side tracks into its own work dir, so the grid's stage runs can be read back alone
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(work)}
    out = subprocess.run(cmd + ["--work-dir", str(work)], capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - start, out.stdout


def tracking_uri(work: Path) -> str:
    return f"sqlite:///{work / 'mlflow.db'}"


def stage_runs(stdout: str) -> int:
    """From the summary line 'sweep NAME: N stage(s) run, …'."""
    line = next(x for x in stdout.splitlines() if x.startswith("sweep ") and "stage(s) run" in x)
    return int(line.split(": ", 1)[1].split()[0])


def stage_overheads(work: Path) -> list[dict]:
    """Every stage the sweep ran (not reused): wall (MLflow run start → end), loop (stage/wall_s)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(work))
    exp = client.get_experiment_by_name("vlmsweep").experiment_id
    rows = []
    runs = client.search_runs([exp], "tags.`vlmsweep.kind` = 'stage' and tags.`vlmsweep.reused` = 'False'",
                              order_by=["attributes.start_time ASC"])
    first = min((r.info.start_time for r in runs), default=0)
    for run in runs:
        wall = (run.info.end_time - run.info.start_time) / 1000
        loop = run.data.metrics.get("stage/wall_s")
        stage = run.data.tags["vlmsweep.stage_id"]
        rows.append({"stage": stage, "status": run.info.status, "start_s": (run.info.start_time - first) / 1000,
                     "wall_s": wall, "loop_s": loop, "overhead_s": wall - loop if loop is not None else None,
                     "setup_s": _manifest(work, stage).get("setup_s")})
    return rows


def _manifest(work: Path, stage: str) -> dict:
    try:
        return json.loads((work / "stages" / stage / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def print_overheads(rows: list[dict]) -> None:
    print(f"{'grid stage':<34} {'start s':>7} {'wall s':>7} {'loop s':>7} {'overhead s':>10} {'setup s':>7}")
    for r in rows:
        loop = f"{r['loop_s']:7.1f}" if r["loop_s"] is not None else f"{'-':>7}"
        over = f"{r['overhead_s']:10.1f}" if r["overhead_s"] is not None else f"{'(eval)':>10}"
        setup = f"{r['setup_s']:7.1f}" if r.get("setup_s") is not None else f"{'-':>7}"
        print(f"{r['stage']:<34} {r['start_s']:7.1f} {r['wall_s']:7.1f} {loop} {over} {setup}")
    train = [r["overhead_s"] for r in rows if r["overhead_s"] is not None]
    evals = [r["wall_s"] for r in rows if r["overhead_s"] is None]
    if train:
        print(f"overhead per training stage (wall - loop): mean {sum(train) / len(train):.1f} s, "
              f"max {max(train):.1f} s over {len(train)} stages")
    if evals:
        print(f"evaluation stages: mean wall {sum(evals) / len(evals):.1f} s over {len(evals)} stages")


def main() -> None:
    argv = sys.argv[1:]
    keep = argv[argv.index("--keep") + 1] if "--keep" in argv else None
    args = [a for k, a in enumerate(argv) if not a.startswith("--") and not (k and argv[k - 1] == "--keep")]
    grid_only = "--grid-only" in argv
    grid_path = args[0] if args else "experiments/smoke.yaml"
    grid = load_any(ROOT / grid_path)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = keep or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        grid_s, grid_out = timed(CLI + ["sweep", grid_path], Path(tmp) / "grid")
        if keep:
            (Path(tmp) / "grid.log").write_text(grid_out)
        overheads = stage_overheads(Path(tmp) / "grid")
        alone_s, alone_runs = 0.0, 0
        for k, variant in enumerate([] if grid_only else grid.variants):
            seconds, out = timed(CLI + ["run", grid_path, "--variant", variant.name], Path(tmp) / f"alone{k}")
            alone_s += seconds
            alone_runs += stage_runs(out)
            print(f"  alone: {variant.name:<32} {stage_runs(out)} stage runs, {seconds:6.0f} s", flush=True)
    runs = stage_runs(grid_out)
    print(f"{grid.name}: {len(grid.variants)} variants")
    print(f"{'way':<22} {'stage runs':>10} {'wall s':>8}")
    print(f"{'grid (vlmsweep sweep)':<22} {runs:>10} {grid_s:>8.0f}")
    if not grid_only:
        print(f"{'each variant alone':<22} {alone_runs:>10} {alone_s:>8.0f}")
        print(f"stage runs saved: {alone_runs - runs}; grid / alone wall time: {grid_s / alone_s:.2f}x "
              f"(alone / grid: {alone_s / grid_s:.2f}x)")
    print_overheads(overheads)


if __name__ == "__main__":
    main()
