"""Run a grid: check every variant, plan, run the stages on Tune, track it all in MLflow.

`vlmsweep run` (one variant: a grid of one) and `vlmsweep sweep` both come here. A resumed
sweep reuses its MLflow parent and variant runs, and every stage whose output is already
in the work dir; only what is missing runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field

from vlmsweep import storage
from vlmsweep.config.errors import ConfigError
from vlmsweep.config.grid import Grid
from vlmsweep.config.workdir import WorkDir
from vlmsweep.eval.run import check_eval, flat_metrics, format_table
from vlmsweep.models.check import check_variant
from vlmsweep.train.stage_output import read_manifest

from .plan import Plan, StageNode, describe, make_plan
from .ray_cluster import check_tracking, ensure_ray
from .tracking import Tracker
from .tune import run_plan


@dataclass
class SweepResult:
    name: str
    run_id: str
    plan: Plan
    ran: list[str] = field(default_factory=list)          # stage ids trained/evaluated by this call
    reused: list[str] = field(default_factory=list)       # stage ids found done in the work dir
    failed: dict = field(default_factory=dict)            # stage id -> reason
    variants: dict = field(default_factory=dict)          # variant -> FINISHED | FAILED (+ reason)
    variant_runs: dict = field(default_factory=dict)      # variant -> its MLflow run id
    wall_s: float = 0.0


def check_grid(grid: Grid, work: WorkDir, offline_ok: bool = False) -> list[str]:
    """Every variant's errors at once, before anything starts; returns notes on what went unchecked."""
    problems, notes = [], []
    preset_root = work.model_root()
    for variant in grid.variants:
        try:
            notes += check_variant(variant.config, preset_root, offline_ok=offline_ok)
            check_eval(variant.config.eval)
        except ConfigError as err:
            problems += [(f"[{variant.name}] {f}", m) for f, m in err.problems]
    if problems:
        raise ConfigError(problems, source=grid.source)
    return sorted(set(notes))


def sweep_id(grid: Grid) -> str:
    return hashlib.sha256(f"{grid.name}:{time.time_ns()}".encode()).hexdigest()[:12]


def _summary(node: StageNode) -> dict:
    if node.kind == "train":
        return read_manifest(node.out_dir)
    return {"eval": flat_metrics(json.loads(storage.read_text(storage.join(node.out_dir, "results.json"))))}


def run_sweep(grid: Grid, work: WorkDir, *, address: str | None = None, max_concurrent: int | None = None,
              resume: bool = False, retries: int = 1, log=print) -> SweepResult:
    started = time.perf_counter()
    # an existing cluster (an address, or this driver running as a Ray Job) needs a tracking
    # server: refused before anything is planned, uploaded or trained
    check_tracking(work.tracking_uri, multi_node=bool(address or os.environ.get("RAY_ADDRESS")))
    check_grid(grid, work)
    plan = make_plan(grid, work)
    log(describe(plan))
    ensure_ray(address)
    check_tracking(work.tracking_uri, multi_node=_alive_nodes() > 1)
    tracker = Tracker(work.tracking_uri)
    previous = tracker.find_sweep(grid.name, work.uri) if resume else None
    if resume and previous is None:
        log(f"no earlier sweep named {grid.name!r} to resume: starting a new one")
    sid = previous.data.tags["vlmsweep.sweep_id"] if previous else sweep_id(grid)
    sweep_run = tracker.start_sweep(grid.name, sid, work.uri, previous)
    if previous:
        log(f"resuming sweep {grid.name} ({sid}): {tracker.close_stale_stage_runs(sid)} interrupted stage run(s) closed")
    result = SweepResult(grid.name, sweep_run, plan)
    try:
        tracker.log_text(sweep_run, describe(plan), "plan.txt")
        if grid.source and grid.source.endswith((".yaml", ".yml")):
            tracker.client.log_artifact(sweep_run, grid.source)
        variant_runs = {v.name: tracker.variant_run_for(sweep_run, sid, v) for v in grid.variants}
        result.variant_runs = variant_runs
        _run_stages(plan, work, tracker, sid, variant_runs, result, max_concurrent, retries, log)
        _close_variants(plan, tracker, variant_runs, result)
    except BaseException as err:
        tracker.end(sweep_run, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED", f"{type(err).__name__}: {err}")
        raise
    result.wall_s = time.perf_counter() - started
    failed = [v for v, s in result.variants.items() if s != "FINISHED"]
    tracker.end(sweep_run, "FINISHED", metrics={"sweep/wall_s": result.wall_s, "sweep/stages_run": len(result.ran),
                                                 "sweep/stages_reused": len(result.reused),
                                                 "sweep/variants_failed": len(failed)})
    log(summary_text(result))
    return result


def _run_stages(plan, work, tracker, sid, variant_runs, result, max_concurrent, retries, log) -> None:
    """Reused stages are recorded first. The rest run as one Tune experiment (sweep/tune.py):
    each stage starts as soon as its inputs are done and its resources are free. Its MLflow run
    opens when it is released and closes when its trial ends."""
    from functools import partial

    from .tracking import MetricsSink

    finished = set()
    for node in plan.stages.values():            # reused stages: linked to their variants, numbers copied
        if node.done():
            finished.add(node.id)
            result.reused.append(node.id)
            run = tracker.finished_stage_run(sid, node.id) or _record(tracker, sid, node, variant_runs, True)
            for v in node.variants:
                tracker.link_stage(variant_runs[v], node, run)
    recorder = _StageRecorder(tracker, sid, variant_runs, result, log)
    try:
        run_plan(plan, work, recorder, done=finished, max_concurrent=max_concurrent, retries=retries,
                 sink_factory=partial(MetricsSink, tracker.uri))
    except BaseException as err:
        recorder.close_open("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED", f"{type(err).__name__}: {err}")
        raise
    recorder.close_open("FAILED", "the trial ended without reporting")  # none expected: Tune ended every trial
    result.failed = recorder.failures


class _StageRecorder:
    """The scheduler's driver-side hooks (see sweep/tune.run_plan): MLflow stage runs and the
    sweep result. Called from Tune's controller, in this process."""

    def __init__(self, tracker, sid, variant_runs, result, log):
        self.tracker, self.sid, self.variant_runs, self.result, self.log = tracker, sid, variant_runs, result, log
        self.runs: dict[str, str] = {}        # stage id -> its open MLflow run
        self.failures: dict[str, str] = {}    # stage id -> reason

    def released(self, node) -> dict:
        run = self.tracker.start_stage(self.sid, self.variant_runs[node.variants[0]], node, reused=False)
        for v in node.variants:
            self.tracker.link_stage(self.variant_runs[v], node, run)
        self.runs[node.id] = run
        self.log(f"start {node.id} (for {', '.join(node.variants)})")
        return {"stage_run": run}

    def finished(self, node, summary: dict) -> None:
        run = self.runs.pop(node.id)
        self.tracker.log_stage_summary(run, [self.variant_runs[v] for v in node.variants], node, summary)
        self.tracker.end(run, "FINISHED")
        self.result.ran.append(node.id)
        if node.kind == "eval":
            results = json.loads(storage.read_text(storage.join(node.out_dir, "results.json")))
            self.log(f"eval of {', '.join(node.variants)}:\n{format_table(results)}")
        else:
            self.log(f"done {node.id}")

    def failed(self, node, reason: str) -> None:
        self.failures[node.id] = reason
        self.tracker.end(self.runs.pop(node.id), "FAILED", reason)
        self.log(f"stage {node.id} FAILED: {reason}")

    def close_open(self, status: str, reason: str) -> None:
        for stage, run in list(self.runs.items()):
            self.failures.setdefault(stage, reason)
            self.tracker.end(run, status, reason)
        self.runs.clear()


def _record(tracker, sid, node, variant_runs, reused) -> str:
    run = tracker.start_stage(sid, variant_runs[node.variants[0]], node, reused=reused)
    tracker.log_stage_summary(run, [variant_runs[v] for v in node.variants], node, _summary(node))
    tracker.end(run, "FINISHED")
    return run


def _close_variants(plan: Plan, tracker: Tracker, variant_runs: dict, result: SweepResult) -> None:
    for name, chain in plan.chains.items():
        bad = [s for s in chain if s in result.failed]
        if bad or not all(plan.stages[s].done() for s in chain):
            reason = "; ".join(f"{s}: {result.failed.get(s, 'not run')}" for s in (bad or chain))
            result.variants[name] = f"FAILED ({reason})"
            tracker.end(variant_runs[name], "FAILED", reason)
            continue
        cost = {"wall_s": 0.0, "cpu_hours": 0.0, "gpu_hours": 0.0}
        for sid in chain:
            node = plan.stages[sid]
            if node.kind == "train":
                t = node.cfg.recipe.stages[node.index].training
                wall = float(read_manifest(node.out_dir).get("wall_s") or 0)
                cost["wall_s"] += wall
                cost["cpu_hours"] += wall * t.workers * t.cpus_per_worker / 3600
                cost["gpu_hours"] += wall * t.workers * t.gpus_per_worker / 3600
        result.variants[name] = "FINISHED"
        tracker.end(variant_runs[name], "FINISHED", metrics={f"cost/{k}": v for k, v in cost.items()})


def _alive_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def summary_text(result: SweepResult) -> str:
    lines = [f"sweep {result.name}: {len(result.ran)} stage(s) run, {len(result.reused)} reused, "
             f"{len(result.failed)} failed, {result.wall_s:.0f} s (MLflow run {result.run_id})"]
    for name, status in result.variants.items():
        lines.append(f"  {name}: {status}")
    return "\n".join(lines)
