"""Run a plan on ONE Ray Tune experiment: a trial per stage, started the moment its inputs are
done and the resources it declares are free. There are no waves.

Design (issue 10, item 4). A `Searcher` walks the plan's stage graph (`StageScheduler`). The
design card's other option was one trial per variant with shared stages computed once through
a coordinating actor. We chose the searcher because:
- A stage is the unit that has resources, retries, a failure and an MLflow run. As one trial
  per stage, each trial declares exactly what its stage uses (`tune.with_resources` with a
  callable of the config), gets Tune's retries (`FailureConfig`) for itself alone, and fails
  alone. A variant trial runs a train stage and then an eval stage, so it would have to ask
  for the larger of the two for its whole life. While a shared stage ran in one variant's
  trial, the other variants' trials would sit idle, holding their resources.
- A shared stage runs once by construction: the plan has already merged equal stages into one
  node, so that node becomes one trial. No lock, actor or second source of truth is needed
  for "who computes it".
- The scheduling state lives in the driver. Tune's controller calls the searcher in the
  driver process, next to the MLflow tracker, so the tracker calls stay there as well. No
  extra actor can die and take the state with it. A resume rebuilds the state from the work
  dir: a finished stage is found done there and is never released again.
- Tune schedulers (early stopping, coming later) act on trials. Here a trial is a stage,
  which reports its training metrics through `TuneReportCallback`.
What it costs: Tune sees only a trial's own request, not the workers its TorchTrainer asks
for once it has started. So the searcher does the admission itself. It tracks what each
running stage holds (`stage_demand`) and releases a stage only when that demand fits into the
cluster's resources minus what is held. Tune then places the trial, and Train places the workers.

What each trial asks for (`trial_request`):
- Evaluation runs inside the trial process, so its trial asks for what evaluation uses: 1 CPU,
  plus 1 GPU where the cluster has GPUs.
- Training: the trial only drives a TorchTrainer. Ray's "Hyperparameter Tuning with Ray Tune"
  guide (Train V2) says that with Train inside Tune, the trial "just acts as a driver process
  to launch and monitor the Ray Train workers running elsewhere". The V2 TrainController actor
  takes 0 CPU and is pinned to the trial's node, and the workers get their own placement group
  from the ScalingConfig (`workers × cpus_per_worker` CPU, + GPU). So the trial asks for the
  memory it holds (tokenizer, dataset plans) and no CPU. Tune refuses an empty request. A
  fraction of a CPU would leave less than one whole CPU, on a small node, for Ray Data's
  1-CPU tasks.
- Ray Data decodes and packs the stage's shards in tasks of 1 CPU each, next to the workers
  and outside any placement group. With 2 CPUs, two stages that each hold 1 CPU of workers
  would starve both data pipelines. So a training stage's admission demand includes
  `DATA_RESERVE`. It is part of the admission rule, not part of the trial request: Ray Data
  takes its CPUs from the free pool, which the rule keeps free for it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ray.tune import Callback as _TuneCallback
from ray.tune.search import ConcurrencyLimiter, Searcher

from vlmsweep.config.workdir import WorkDir

from .plan import Plan, StageNode

# Ray Data runs a read/prepare task on 1 CPU (its default). One whole free CPU per running
# training stage keeps its pipeline moving next to its workers.
DATA_RESERVE = {"CPU": 1.0}
# What a training trial's own process holds: a driver waiting on its TorchTrainer
# (tokenizer, Ray Data plans, the controller handle). It needs memory, not CPU.
TRAIN_DRIVER = {"memory": 512 * 2**20}
# The key a trial reports its stage summary under (Tune adds its own "done" key to results).
SUMMARY_KEY = "vlmsweep_summary"


# ---------------------------------------------------------------- resources


def trial_request(node: StageNode, cluster_gpus: float) -> dict[str, float]:
    """What the trial process itself asks Ray for. See the module docstring for why."""
    if node.kind == "eval":
        return {"CPU": 1.0, **({"GPU": 1.0} if cluster_gpus >= 1 else {})}
    return dict(TRAIN_DRIVER)


def stage_demand(node: StageNode, cluster_gpus: float) -> dict[str, float]:
    """What a running stage holds of the cluster: its trial, its Train workers, and the CPU its
    Ray Data pipeline needs next to them."""
    demand = trial_request(node, cluster_gpus)
    if node.kind == "train":
        t = node.cfg.recipe.stages[node.index].training
        demand = _add(demand, {"CPU": t.workers * t.cpus_per_worker, "GPU": t.workers * t.gpus_per_worker})
        demand = _add(demand, DATA_RESERVE)
    return {k: v for k, v in demand.items() if v}


def _add(a: dict, b: dict, sign: float = 1.0) -> dict:
    return {k: a.get(k, 0.0) + sign * b.get(k, 0.0) for k in set(a) | set(b)}


def fits(demand: dict, free: dict) -> bool:
    return all(v <= free.get(k, 0.0) + 1e-9 for k, v in demand.items())


# ---------------------------------------------------------------- the searcher


class StageScheduler(Searcher):
    """Releases (suggests) a stage as soon as its inputs have finished and its demand fits into
    what the cluster has free. It returns None while nothing can start, and `FINISHED` once no
    unreleased stage can run any more. A failed stage blocks its dependents, and only them.

    `stages`: the plan's stages (dependency order). `done`: the ids already finished.
    `demands`: stage id → the resources it holds while it runs. `cluster`: () → the cluster's
    total resources (read on every call: a cluster can grow). `on_release(node)` is called in
    the driver when a stage is released. It returns extra config for the trial (the MLflow run).
    If nothing is running, the best ready stage is released even if it does not fit, so that an
    oversized stage waits for Ray (or the autoscaler) instead of never starting.
    """

    def __init__(self, stages: dict[str, Any], demands: dict[str, dict], *, done: Iterable[str] = (),
                 cluster: Callable[[], dict] | None = None, max_concurrent: int | None = None,
                 on_release: Callable[[Any], dict | None] | None = None):
        super().__init__()
        self.stages = stages
        self.demands = demands
        self.finished: set[str] = set(done)
        self.failed: set[str] = set()
        self.running: dict[str, str] = {}      # trial id -> stage id
        self.released: set[str] = set()
        self.max_concurrent = max_concurrent
        self._cluster = cluster
        self._on_release = on_release
        self._priority = _priorities(stages)

    # what Tune asks
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # nothing to search: the plan is the space

    def suggest(self, trial_id: str) -> dict | str | None:
        waiting = [s for s in self.stages if s not in self.finished and s not in self.released]
        runnable = [s for s in waiting if not self.blocked(s)]
        if not runnable:
            return Searcher.FINISHED
        if self.max_concurrent and len(self.running) >= self.max_concurrent:
            return None
        ready = sorted((s for s in runnable if all(i in self.finished for i in self.stages[s].inputs)),
                       key=lambda s: self._priority[s])
        free = self.free()
        for sid in ready:
            if fits(self.demands[sid], free) or not self.running:
                return self._release(trial_id, sid)
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        sid = self.running.pop(trial_id, None)
        if sid is None:
            return
        # a stage is finished when its trial reported the summary (its last act); a trial that
        # Tune stopped before it ran (teardown) has no result
        (self.finished if not error and result and SUMMARY_KEY in result else self.failed).add(sid)

    # state
    def unfinished(self) -> list[str]:
        """Stages that could still run or are running: empty once the experiment is complete."""
        return [s for s in self.stages if s not in self.finished and s not in self.failed and not self.blocked(s)]

    def blocked(self, sid: str) -> bool:
        """Whether `sid` needs a stage that failed (directly or further up)."""
        return any(i in self.failed or self.blocked(i) for i in self.stages[sid].inputs)

    def held(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for sid in self.running.values():
            total = _add(total, self.demands[sid])
        return total

    def free(self) -> dict[str, float]:
        total = self._cluster() if self._cluster else _cluster_resources()
        return _add({k: float(v) for k, v in total.items()}, self.held(), -1.0)

    def _release(self, trial_id: str, sid: str) -> dict:
        self.running[trial_id] = sid
        self.released.add(sid)
        extra = self._on_release(self.stages[sid]) if self._on_release else None
        return {"stage_id": sid, **(extra or {})}

    # Tune pickles the searcher into its experiment state (tuner.pkl, searcher checkpoints).
    # Resuming is ours (the work dir), so the driver-only hook is left out and saving is a no-op.
    def __getstate__(self):
        return {**self.__dict__, "_on_release": None, "_cluster": None}

    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass


def _priorities(stages: dict[str, Any]) -> dict[str, tuple]:
    """Release order among ready stages: the most stages waiting on it first (the critical path:
    a shared pretrain unblocks several variants), then plan order."""
    children: dict[str, list[str]] = {s: [] for s in stages}
    for s, node in stages.items():
        for i in node.inputs:
            children.setdefault(i, []).append(s)
    memo: dict[str, set] = {}

    def below(s: str) -> set:
        if s not in memo:
            memo[s] = set().union(*[{c} | below(c) for c in children.get(s, [])]) if children.get(s) else set()
        return memo[s]

    return {s: (-len(below(s)), k) for k, s in enumerate(stages)}


def _cluster_resources() -> dict:
    import ray

    return ray.cluster_resources()


# ---------------------------------------------------------------- the driver side


class StageEvents(_TuneCallback):
    """Tune's end-of-trial events → `hooks.finished(node, summary)` / `hooks.failed(node, reason)`,
    in the driver, by the same rule as `StageScheduler.on_trial_complete` (Tune calls the
    searcher first, then this). The summary is what the trial reported as its last result
    (`Trial.last_result` has it; `Result.metrics` of Train-in-Tune runs may not)."""

    def __init__(self, stages: dict[str, StageNode], hooks):
        self.stages = stages
        self.hooks = hooks

    def on_trial_complete(self, iteration, trials, trial, **info):
        node = self.stages[trial.config["stage_id"]]
        text = (trial.last_result or {}).get(SUMMARY_KEY)
        if text is None:
            self.hooks.failed(node, "the trial ended without reporting its stage's summary")
        else:
            self.hooks.finished(node, json.loads(text))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.hooks.failed(self.stages[trial.config["stage_id"]], reason(_error_text(trial)))

    def __getstate__(self):  # pickled into tuner.pkl: leave the driver-only hooks out
        return {**self.__dict__, "hooks": None}


def _error_text(trial) -> str | None:
    """The trial's error. Tune has just written it into the driver's staging dir; its copy in
    the experiment's storage (`Trial.get_error`) appears only at the next sync."""
    try:
        return Path(trial.error_file).read_text() if trial.error_file else trial.get_error()
    except OSError:
        return trial.get_error()


def stage_trial(config: dict, nodes: dict, work: WorkDir, sink_factory=None) -> None:
    """One Tune trial: train or evaluate one stage, then report its summary."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from .execute import execute_stage

    node: StageNode = nodes[config["stage_id"]]
    run = config.get("stage_run")
    sink = sink_factory(run) if sink_factory and run and node.kind == "train" else None
    summary = execute_stage(node, nodes, work, sink=sink, callbacks=[TuneReportCallback()])
    tune.report({SUMMARY_KEY: json.dumps(summary, default=str)})


def tune_run_config(name: str, work: WorkDir, retries: int, callbacks: list):
    """The experiment's RunConfig, in one place: Tune's state lives in the work dir (its URI and
    filesystem, as Ray Train's do in train/stage.py)."""
    from ray import tune

    from vlmsweep import storage

    path, filesystem = storage.ray_storage(storage.join(work.ray_storage, "tune"))
    return tune.RunConfig(name=name, storage_path=path, storage_filesystem=filesystem,
                          failure_config=tune.FailureConfig(max_failures=retries), callbacks=callbacks, verbose=0)


def _trial_dirname(trial) -> str:
    return trial.config["stage_id"]


def run_plan(plan: Plan, work: WorkDir, hooks, *, done: Iterable[str] = (), max_concurrent: int | None = None,
             retries: int = 1, sink_factory=None) -> None:
    """Run every stage of `plan` not in `done` as one Tune experiment, a trial per stage.

    `hooks` is called in the driver: `released(node) -> dict` (extra trial config, e.g.
    {"stage_run": id}), `finished(node, summary)`, `failed(node, reason)`.
    `sink_factory(stage_run)` builds the per-step metrics sink a training trial writes to.
    """
    import ray
    from ray import tune

    done = set(done)
    todo = [s for s in plan.stages if s not in done]
    if not todo:
        return
    gpus = float(ray.cluster_resources().get("GPU", 0))
    nodes = plan.stages
    requests = {sid: trial_request(n, gpus) for sid, n in nodes.items()}
    searcher = StageScheduler(nodes, {sid: stage_demand(n, gpus) for sid, n in nodes.items()}, done=done,
                              max_concurrent=max_concurrent, on_release=hooks.released)
    # Tune asks a custom searcher for one trial at a time and waits until that trial's actor has
    # started before asking again (about 3 s each). The limiter is how Tune is told that more
    # trials may be pending at once; the cap itself is the searcher's.
    search_alg = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent or len(todo))
    trainable = tune.with_resources(
        tune.with_parameters(stage_trial, nodes=nodes, work=work, sink_factory=sink_factory),
        resources=lambda config: tune.PlacementGroupFactory([requests[config["stage_id"]]]))
    tuner = tune.Tuner(
        trainable,
        # reuse_actors: a trial whose request equals a finished trial's (train after train, eval
        # after eval) runs in that trial's process, which has started and imported torch,
        # transformers and Ray Train / Data already (~5 s per stage on 2 CPUs). Tune keeps a
        # finished trial's actor only for a pending trial of the same request, or (one actor)
        # while no trial is pending; it stops it as soon as a trial with another request is
        # pending. So a cached eval actor holds its 1 CPU only while nothing else is released,
        # and then no more than it held while it ran: the searcher admitted what runs next to
        # it with that CPU taken, so the running stages' Ray Data keeps its DATA_RESERVE.
        tune_config=tune.TuneConfig(search_alg=search_alg, num_samples=len(todo), trial_dirname_creator=_trial_dirname,
                                    reuse_actors=True),
        run_config=tune_run_config(f"{plan.grid.name}-{os.getpid()}-{time.time_ns() // 10**6}", work, retries,
                                   [StageEvents(nodes, hooks)]),
    )
    tuner.fit()
    if left := searcher.unfinished():
        # Tune returns normally after Ctrl-C (it stops its trials and saves its state): the
        # caller must know that these stages neither finished nor failed
        raise KeyboardInterrupt(f"the Tune experiment stopped with {len(left)} stage(s) unfinished: {', '.join(left)}")


def reason(error) -> str:
    """The root cause of a trial error in one line (e.g. the NaN message from the worker)."""
    text = str(error) if error else "the trial ended without reporting"
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith(("FloatingPointError", "RuntimeError", "ValueError", "ConfigError", "FileNotFoundError")):
            return line[:500]
    return text.strip().splitlines()[-1][:500] if text.strip() else text
