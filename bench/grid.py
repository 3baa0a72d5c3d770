"""A grid vs its variants run one by one: stage runs and wall time, side by side in one run.

  grid    `vlmsweep sweep GRID` in a fresh work dir: shared stages run once
  alone   `vlmsweep run GRID --variant NAME` for every variant, each in its own fresh work
          dir (as someone running TinyLLaVA Factory's scripts once per variant would)

Both sides generate their own synthetic world and presets, so neither reuses the other's work.

    .venv/bin/python bench/grid.py [experiments/smoke.yaml]
"""

from __future__ import annotations

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
    out = subprocess.run(cmd + ["--work-dir", str(work)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - start, out.stdout


def stage_runs(stdout: str) -> int:
    """From the summary line 'sweep NAME: N stage(s) run, …'."""
    line = next(x for x in stdout.splitlines() if x.startswith("sweep ") and "stage(s) run" in x)
    return int(line.split(": ", 1)[1].split()[0])


def main() -> None:
    grid_path = sys.argv[1] if len(sys.argv) > 1 else "experiments/smoke.yaml"
    grid = load_any(ROOT / grid_path)
    with tempfile.TemporaryDirectory() as tmp:
        grid_s, grid_out = timed(CLI + ["sweep", grid_path], Path(tmp) / "grid")
        alone_s, alone_runs = 0.0, 0
        for k, variant in enumerate(grid.variants):
            seconds, out = timed(CLI + ["run", grid_path, "--variant", variant.name], Path(tmp) / f"alone{k}")
            alone_s += seconds
            alone_runs += stage_runs(out)
            print(f"  alone: {variant.name:<32} {stage_runs(out)} stage runs, {seconds:6.0f} s", flush=True)
    runs = stage_runs(grid_out)
    print(f"{grid.name}: {len(grid.variants)} variants")
    print(f"{'way':<22} {'stage runs':>10} {'wall s':>8}")
    print(f"{'grid (vlmsweep sweep)':<22} {runs:>10} {grid_s:>8.0f}")
    print(f"{'each variant alone':<22} {alone_runs:>10} {alone_s:>8.0f}")
    print(f"stage runs saved: {alone_runs - runs}; wall time alone / grid: {alone_s / grid_s:.2f}x")


if __name__ == "__main__":
    main()
