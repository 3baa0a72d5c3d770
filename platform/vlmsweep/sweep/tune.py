"""Run a plan on Ray Tune: each stage is one trial, launched when its inputs are done.

Stages run in waves — every stage whose inputs are finished — each wave one Tuner with a
trial per stage (a trial runs one TorchTrainer, the V2 pattern, or the evaluation). A
failed stage fails only the variants that need it; the rest of the grid goes on.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from vlmsweep.config.workdir import WorkDir

from .plan import Plan, StageNode

# A trial itself only waits on its TorchTrainer; it holds a token CPU so Tune can place it
# (Tune refuses an empty request) without taking CPU from the workers or from Ray Data.
TRIAL_CPU = 0.01


def stage_trial(config: dict, nodes: dict, work_root: str, sinks: dict) -> None:
    """One Tune trial: train or evaluate one stage, then report its summary."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from .execute import execute_stage

    node: StageNode = nodes[config["stage_id"]]
    summary = execute_stage(node, nodes, WorkDir(Path(work_root)), sink=sinks.get(node.id),
                            callbacks=[TuneReportCallback()])
    tune.report({"done": 1, "summary": json.dumps(summary, default=str)})


@dataclass
class WaveResult:
    finished: dict = field(default_factory=dict)   # stage id -> summary
    failed: dict = field(default_factory=dict)     # stage id -> error text


def concurrency(plan: Plan, ready: list[StageNode], cap: int | None) -> int:
    """How many stages fit at once: each needs its workers' CPUs plus one CPU for its Ray Data tasks
    (on 2 CPUs, two 1-CPU stages side by side would leave their data pipelines none: a deadlock)."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 1)
    need = max(s.cfg.recipe.stages[s.index].training.workers * s.cfg.recipe.stages[s.index].training.cpus_per_worker
               if s.kind == "train" else 1 for s in ready) + 1
    fit = max(1, math.floor(cpus / need))
    return max(1, min(fit, cap or fit, len(ready)))


def run_wave(plan: Plan, ready: list[StageNode], work: WorkDir, wave: int, sinks: dict, max_concurrent: int | None,
             retries: int) -> WaveResult:
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(stage_trial, nodes=plan.stages, work_root=str(work.root), sinks=sinks),
        {"CPU": TRIAL_CPU})
    tuner = tune.Tuner(
        trainable,
        param_space={"stage_id": tune.grid_search([s.id for s in ready])},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency(plan, ready, max_concurrent)),
        run_config=tune.RunConfig(name=f"{plan.grid.name}-wave{wave}-{os.getpid()}", storage_path=str(work.ray_storage / "tune"),
                                  failure_config=tune.FailureConfig(max_failures=retries), verbose=0),
    )
    out = WaveResult()
    for result in tuner.fit():
        sid = result.config["stage_id"]
        if result.error is None and result.metrics and result.metrics.get("done"):
            out.finished[sid] = json.loads(result.metrics["summary"])
        else:
            out.failed[sid] = _reason(result.error)
    return out


def _reason(error) -> str:
    """The root cause of a trial error in one line (e.g. the NaN message from the worker)."""
    text = str(error) if error else "the trial ended without reporting"
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith(("FloatingPointError", "RuntimeError", "ValueError", "ConfigError", "FileNotFoundError")):
            return line[:500]
    return text.strip().splitlines()[-1][:500] if text.strip() else text
