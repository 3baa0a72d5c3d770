"""The stage scheduler (sweep/tune.py): released the moment inputs are done and resources fit.

Unit tests drive the Searcher by hand with a fake plan: no Ray, no training. One real sweep
(tiny stages on a 4-CPU local Ray) then shows that there are no waves: a short chain's
evaluation starts while a long, unrelated training stage is still running.
"""

from __future__ import annotations

import pickle
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray.tune.search import Searcher

from vlmsweep.sweep.tune import DATA_RESERVE, SUMMARY_KEY, TRAIN_DRIVER, StageScheduler, stage_demand, trial_request

ROOT = Path(__file__).resolve().parents[1]


def node(sid, *inputs, kind="train"):
    return SimpleNamespace(id=sid, inputs=list(inputs), kind=kind)


def scheduler(stages, demands=None, cluster=None, **kw):
    stages = {s.id: s for s in stages}
    demands = demands or {sid: {"CPU": 1.0} for sid in stages}
    return StageScheduler(stages, demands, cluster=lambda: cluster or {"CPU": 2.0}, **kw)


class Driver:
    """Plays Tune's part: numbered trial ids, and what ran on which trial."""

    def __init__(self, searcher):
        self.searcher, self.n, self.trial_of = searcher, 0, {}

    def suggest(self):
        self.n += 1
        out = self.searcher.suggest(f"t{self.n}")
        if isinstance(out, dict):
            self.trial_of[out["stage_id"]] = f"t{self.n}"
            return out["stage_id"]
        return out

    def complete(self, sid, error=False):
        self.searcher.on_trial_complete(self.trial_of[sid], result={} if error else {SUMMARY_KEY: "{}"}, error=error)


def chains():
    # A → B and C → D; listed as a plan lists them (dependency order)
    return [node("A"), node("B", "A"), node("C"), node("D", "C")]


def test_dependent_starts_when_its_input_finishes_not_when_a_wave_does():
    run = Driver(scheduler(chains()))
    assert run.suggest() == "A" and run.suggest() == "C"
    assert run.suggest() is None              # 2 CPUs held by A and C; B and D wait for their inputs
    run.complete("C")                         # C is quick; A is still running
    assert run.suggest() == "D"               # D starts at once, without waiting for slow A
    assert run.suggest() is None
    run.complete("A")
    assert run.suggest() == "B"
    assert run.suggest() == Searcher.FINISHED   # nothing left to release (B and D still run)
    run.complete("B"), run.complete("D")
    assert run.searcher.finished == {"A", "B", "C", "D"}


def test_a_failed_stage_blocks_only_its_dependents():
    run = Driver(scheduler(chains()))
    assert (run.suggest(), run.suggest()) == ("A", "C")
    run.complete("A", error=True)
    assert run.suggest() is None              # B is blocked; D still waits for C
    run.complete("C")
    assert run.suggest() == "D"
    assert run.suggest() == Searcher.FINISHED
    run.complete("D")
    assert run.searcher.failed == {"A"} and "B" not in run.searcher.released
    assert run.searcher.blocked("B") and not run.searcher.blocked("D")


def test_finished_once_everything_is_done_or_blocked():
    run = Driver(scheduler([node("A"), node("B", "A"), node("C", "B")], done={"A"}))
    assert run.suggest() == "B"               # A was done in the work dir: B is ready at once
    run.complete("B", error=True)
    assert run.suggest() == Searcher.FINISHED  # C is blocked by B: not released, not waited for
    assert run.searcher.released == {"B"}


def test_a_trial_that_ends_without_its_summary_did_not_finish_its_stage():
    run = Driver(scheduler(chains()))
    assert (run.suggest(), run.suggest()) == ("A", "C")
    run.searcher.on_trial_complete(run.trial_of["A"], result={"step": 3})   # no summary: it did not finish
    assert run.searcher.failed == {"A"} and run.searcher.blocked("B")
    assert run.searcher.unfinished() == ["C", "D"]   # what an interrupted experiment leaves


def test_trial_events_reach_the_hooks_in_the_driver(tmp_path):
    from vlmsweep.sweep.tune import StageEvents

    calls = []
    hooks = SimpleNamespace(finished=lambda n, summary: calls.append(("finished", n.id, summary)),
                            failed=lambda n, reason: calls.append(("failed", n.id, reason)))
    events = StageEvents({"A": node("A"), "B": node("B")}, hooks)
    events.on_trial_complete(0, [], SimpleNamespace(config={"stage_id": "A"},
                                                    last_result={SUMMARY_KEY: '{"steps": 3}', "done": True}))
    events.on_trial_complete(0, [], SimpleNamespace(config={"stage_id": "B"}, last_result={"done": True}))
    error = tmp_path / "error.txt"
    error.write_text("Failure # 1\nTraceback …\nFloatingPointError: stage finetune: loss is not finite (nan)\n")
    events.on_trial_error(0, [], SimpleNamespace(config={"stage_id": "B"}, error_file=str(error)))
    assert calls == [("finished", "A", {"steps": 3}),
                     ("failed", "B", "the trial ended without reporting its stage's summary"),
                     ("failed", "B", "FloatingPointError: stage finetune: loss is not finite (nan)")]
    assert pickle.loads(pickle.dumps(events)).hooks is None


def test_resources_of_running_stages_are_held_until_they_end():
    stages = [node("A"), node("C"), node("E", kind="eval"), node("G")]
    demands = {"A": {"CPU": 2.0}, "C": {"CPU": 2.0}, "E": {"CPU": 1.0}, "G": {"CPU": 1.0, "GPU": 1.0}}
    run = Driver(scheduler(stages, demands, cluster={"CPU": 3.0}))
    assert run.suggest() == "A"
    assert run.suggest() == "E"               # C (2 CPU) does not fit next to A; E (1 CPU) does
    assert run.searcher.held() == {"CPU": 3.0}
    assert run.suggest() is None
    run.complete("E")
    assert run.suggest() is None              # 1 CPU free: still not enough for C; G needs a GPU
    run.complete("A")
    assert run.suggest() == "C"
    assert run.suggest() is None              # the cluster has no GPU for G while C runs …
    run.complete("C")
    assert run.suggest() == "G"               # … and with nothing running, G goes to Ray anyway
    assert run.suggest() == Searcher.FINISHED


def test_max_concurrent_caps_stages_at_once():
    run = Driver(scheduler(chains(), cluster={"CPU": 64.0}, max_concurrent=1))
    assert run.suggest() == "A" and run.suggest() is None
    run.complete("A")
    assert run.suggest() == "C"               # C still has D behind it: the longer path goes first
    assert run.suggest() is None


def test_a_shared_stage_goes_first():
    # S is shared by two chains: releasing it first unblocks the most work
    stages = [node("X"), node("S"), node("S1", "S"), node("S2", "S"), node("Y", "X")]
    run = Driver(scheduler(stages, cluster={"CPU": 1.0}))
    assert run.suggest() == "S"


class Recorder:
    """A driver-side hook as the runner's: it holds what cannot be pickled (a lock, a client)."""

    def __init__(self):
        self.lock, self.seen = threading.Lock(), []

    def __call__(self, n):
        self.seen.append(n.id)
        return {"stage_run": f"run-{n.id}"}


def test_release_hook_runs_once_per_stage_and_the_searcher_pickles_without_it():
    hook = Recorder()
    searcher = scheduler(chains(), on_release=hook)
    assert searcher.suggest("t1") == {"stage_id": "A", "stage_run": "run-A"}
    assert searcher.suggest("t2") == {"stage_id": "C", "stage_run": "run-C"}
    assert searcher.suggest("t3") is None and hook.seen == ["A", "C"]
    copy = pickle.loads(pickle.dumps(searcher))   # Tune writes it into tuner.pkl
    assert copy.running == {"t1": "A", "t2": "C"} and copy._on_release is None


def _stage(kind, workers=2, cpus=0.5, gpus=0):
    training = SimpleNamespace(workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus)
    cfg = SimpleNamespace(recipe=SimpleNamespace(stages=[SimpleNamespace(training=training)]))
    return SimpleNamespace(id=kind, kind=kind, cfg=cfg, index=0 if kind == "train" else -1, inputs=[])


def test_what_trials_ask_for_and_what_stages_hold():
    train, evaluation = _stage("train"), _stage("eval")
    # a training trial only drives its TorchTrainer: memory, no CPU (Ray Data needs whole CPUs)
    assert trial_request(train, cluster_gpus=0) == TRAIN_DRIVER and "CPU" not in TRAIN_DRIVER
    # it holds its workers' CPUs plus the data reserve
    assert stage_demand(train, 0) == {**TRAIN_DRIVER, "CPU": 2 * 0.5 + DATA_RESERVE["CPU"]}
    gpu_train = _stage("train", workers=2, cpus=1, gpus=1)
    assert stage_demand(gpu_train, 8)["GPU"] == 2 and stage_demand(gpu_train, 8)["CPU"] == 3
    # evaluation runs in its trial: 1 CPU, and a GPU where the cluster has one
    assert trial_request(evaluation, 0) == {"CPU": 1.0} == stage_demand(evaluation, 0)
    assert trial_request(evaluation, 4) == {"CPU": 1.0, "GPU": 1.0}


# ---------------------------------------------------------------- one real sweep: no waves


@pytest.fixture
def ray_4cpu():
    """Ray with 4 logical CPUs (this machine may have 2): room for two training stages at once
    (1 worker CPU + 1 data CPU each). Shut down afterwards so later tests start their own."""
    import ray

    ray.shutdown()
    from vlmsweep.sweep.ray_cluster import ensure_ray

    ensure_ray(num_cpus=4)
    yield
    ray.shutdown()


def test_a_short_chain_goes_on_while_a_long_unrelated_stage_runs(tmp_path, ray_4cpu, monkeypatch):
    from mlflow.tracking import MlflowClient

    from vlmsweep.config.grid import load_grid
    from vlmsweep.config.workdir import WorkDir
    from vlmsweep.sweep.plan import make_plan
    from vlmsweep.sweep.runner import run_sweep

    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(textwrap.dedent(f"""
        name: no-waves
        base: {ROOT / 'experiments/smoke/variant.yaml'}
        variant:
          data: {{synthetic: {{image_size: 32}}}}
          training: {{steps: 2, global_batch: 2, micro_batch: 1, workers: 1, cpus_per_worker: 1, max_length: 384,
                      checkpoint_every: 100}}
          eval: {{benchmarks: [pope], batch_size: 16, max_new_tokens: 2}}
        naming: "{{recipe}}"
        axes:
          recipe:
            - {{label: quick, name: single_stage, stages: {{finetune: {{training: {{steps: 2}}}}}}}}
            - {{label: slow, name: single_stage, stages: {{finetune: {{training: {{steps: 300}}}}}}}}
    """))
    work = WorkDir.at(tmp_path / "work")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", work.tracking_uri)
    plan = make_plan(load_grid(grid_file), work)
    chain = {v: [plan.stages[s] for s in c] for v, c in plan.chains.items()}
    assert [n.kind for n in chain["quick"]] == ["train", "eval"] and not set(plan.chains["quick"]) & set(plan.chains["slow"])

    result = run_sweep(load_grid(grid_file), work, retries=0, log=lambda *_: None)
    assert result.variants == {"quick": "FINISHED", "slow": "FINISHED"}
    assert len(list(Path(work.ray_storage, "tune").iterdir())) == 1   # one Tune experiment for the sweep

    client = MlflowClient(work.tracking_uri)
    exp = client.get_experiment_by_name("vlmsweep").experiment_id
    runs = {r.data.tags["vlmsweep.stage_id"]: r.info for r in client.search_runs([exp], "tags.`vlmsweep.kind` = 'stage'")}
    assert all(r.status == "FINISHED" for r in runs.values()) and len(runs) == 4
    quick_train, quick_eval, slow_train = (runs[chain["quick"][0].id], runs[chain["quick"][1].id],
                                           runs[chain["slow"][0].id])
    # one experiment, no waves: the quick chain's evaluation was released the moment its
    # training ended, while the long training stage of the other variant was still running
    assert quick_eval.start_time - quick_train.end_time < 10_000, (quick_train, quick_eval)
    assert quick_eval.start_time < slow_train.end_time, (quick_eval, slow_train)
