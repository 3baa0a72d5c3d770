"""Read one sweep back out of MLflow: the sweep run, its variants, and their loss curves.

Only reads. The tag names below mirror what sweep/tracking.py writes; they are repeated here
rather than imported so the report layer does not pull in the sweep layer (and through it
config, models, train...) just to read a database.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd

EXPERIMENT = "vlmsweep"
KIND = "vlmsweep.kind"              # "sweep" | "variant" | "stage"
SWEEP_NAME = "vlmsweep.sweep_name"
SWEEP_ID = "vlmsweep.sweep_id"
WORK_DIR = "vlmsweep.work_dir"      # the work dir a sweep ran in (one server serves many)
PARENT = "mlflow.parentRunId"
STAGE_REF = "vlmsweep.stage."       # + stage name → stage run id, on every variant that used it
ERROR = "vlmsweep.error"
OUTPUT = "vlmsweep.output"          # a stage run's output dir: an eval stage's holds results.json
RESULTS = "results.json"            # {bench: scored result, with its per-item rows}
AXIS = "axis."
LOSS = "train/loss"

log = logging.getLogger(__name__)


class SweepNotFound(LookupError):
    """No such sweep in the tracking store, or no store to read: an input error (one line, exit 2)."""


class Curve(NamedTuple):
    stage: str
    run_id: str          # the stage run; shared stages have the same run_id under several variants
    steps: list[int]
    values: list[float]


@dataclass
class SweepData:
    tracking_uri: str
    experiment: str
    sweep_run: object                    # mlflow.entities.Run
    variants: pd.DataFrame               # one row per variant run, see _variant_row
    curves: dict[str, list[Curve]]       # variant name → its stages' train/loss, in stage order
    axes: list[str] = field(default_factory=list)    # axis names, without the "axis." prefix
    notes: list[str] = field(default_factory=list)   # things the reader should know (ambiguities)
    # variant → "eval/<bench>/<metric>" → {item key: score x 100}, for headline metrics that are
    # per-item means, read from the eval stage's results.json: what paired differences need
    items: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    @property
    def sweep_run_id(self) -> str:
        return self.sweep_run.info.run_id

    @property
    def sweep_name(self) -> str:
        tags = self.sweep_run.data.tags
        return tags.get(SWEEP_NAME) or self.sweep_run.info.run_name or self.sweep_run_id


def _q(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def _search(client, experiment_id: str, filter_string: str) -> list:
    """Every matching run, oldest first: search_runs pages at 1000, a big sweep's stages may not fit."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _sweep_label(run) -> str:
    return run.data.tags.get(SWEEP_NAME) or run.info.run_name or run.info.run_id


def _find_sweep(client, experiment_id: str, sweep: str, where: str, notes: list[str], work_dir: str | None = None):
    sweeps = _search(client, experiment_id, f"tags.`{KIND}` = 'sweep'")
    if work_dir and any(r.data.tags.get(WORK_DIR) == work_dir for r in sweeps):
        sweeps = [r for r in sweeps if r.data.tags.get(WORK_DIR) == work_dir]
    by_id = [r for r in sweeps if sweep in (r.info.run_id, r.data.tags.get(SWEEP_ID))]
    if by_id:
        return by_id[-1]
    named = [r for r in sweeps if _sweep_label(r) == sweep]
    if not named:
        names = sorted({_sweep_label(r) for r in sweeps})
        listing = ", ".join(names) if names else "none"
        raise SweepNotFound(f"no sweep named or with run id {sweep!r} {where}; sweeps there: {listing}")
    chosen = named[-1]  # _search returns oldest first
    if len(named) > 1:
        others = ", ".join(r.info.run_id for r in named[:-1])
        msg = (f"{len(named)} sweep runs are named {sweep!r}; using the latest, {chosen.info.run_id} "
               f"(pass a run id to pick another: {others})")
        log.warning(msg)
        notes.append(msg)
    return chosen


def _variant_row(run) -> dict:
    tags = run.data.tags
    row = {"variant": run.info.run_name or tags.get("mlflow.runName") or run.info.run_id,
           "run_id": run.info.run_id, "status": run.info.status, "error": tags.get(ERROR, ""),
           "start_time": run.info.start_time}
    row.update({k: v for k, v in tags.items() if k.startswith(AXIS)})
    row.update(run.data.metrics)  # latest value of each: eval/<bench>/<metric>, <stage>/final_loss, …
    return row


def _stage_refs(client, experiment_id: str, variant) -> list[tuple[str, str]]:
    """(stage name, stage run id) for a variant, in the order the stages ran."""
    refs = [(k[len(STAGE_REF):], v) for k, v in variant.data.tags.items() if k.startswith(STAGE_REF)]
    if not refs:
        # a variant logged before the stage tags existed: its own child runs are its stages
        children = _search(client, experiment_id,
                           f"tags.`{PARENT}` = {_q(variant.info.run_id)} and tags.`{KIND}` = 'stage'")
        return [(r.info.run_name, r.info.run_id) for r in children]
    starts = {}
    for _, run_id in refs:
        try:
            starts[run_id] = client.get_run(run_id).info.start_time or 0
        except Exception:  # a dangling reference (deleted run) must not sink the whole report
            starts[run_id] = 0
    return sorted(refs, key=lambda ref: (starts[ref[1]], ref[0]))


def _natural(labels) -> list[str]:
    """Axis labels in a readable order: numerically when they are all numbers (seeds 2 < 10)."""
    labels = list(dict.fromkeys(labels))
    if all(re.fullmatch(r"-?\d+(\.\d+)?", s) for s in labels):
        return sorted(labels, key=float)
    return sorted(labels)


def axis_labels(variants: pd.DataFrame, axis: str) -> list[str]:
    column = AXIS + axis
    return _natural(variants[column].dropna()) if column in variants else []


def _open(tracking_uri: str, experiment: str):
    """(client, the experiment or None); a store that can't be read at all (not a database, a
    server that refuses) is SweepNotFound naming it, not the database driver's traceback."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from sqlalchemy.exc import SQLAlchemyError

    try:
        client = MlflowClient(tracking_uri)  # a sqlite store reads its tables here
        return client, client.get_experiment_by_name(experiment)
    except (MlflowException, SQLAlchemyError) as err:
        detail = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise SweepNotFound(f"cannot read the MLflow tracking store {tracking_uri}: {detail}") from None


def load_sweep(tracking_uri: str, sweep: str, experiment: str = EXPERIMENT, work_dir: str | None = None) -> SweepData:
    """The sweep named SWEEP (its latest run when names repeat; among those run in WORK_DIR when
    given) or with run id SWEEP."""
    client, found = _open(tracking_uri, experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise SweepNotFound(f"no experiment {experiment!r} at {tracking_uri} (experiments there: "
                            f"{', '.join(names) or 'none'}), so no sweep {sweep!r}")
    eid, notes = found.experiment_id, []
    sweep_run = _find_sweep(client, eid, sweep, f"in experiment {experiment!r} at {tracking_uri}", notes, work_dir)

    runs = _search(client, eid, f"tags.`{PARENT}` = {_q(sweep_run.info.run_id)} and tags.`{KIND}` = 'variant'")
    latest = {}
    for run in runs:  # oldest first, so a re-run of a variant replaces the earlier attempt
        latest[run.info.run_name] = run
    if len(latest) < len(runs):
        notes.append(f"{len(runs) - len(latest)} earlier attempt(s) of re-run variants are left out; "
                     "each variant is reported from its latest run")
    variants = list(latest.values())

    frame = pd.DataFrame([_variant_row(r) for r in variants])
    if frame.empty:
        frame = pd.DataFrame(columns=["variant", "run_id", "status", "error", "start_time"])
    axes = sorted({c[len(AXIS):] for c in frame.columns if c.startswith(AXIS)})
    # table order: by axis labels (each in its natural order), then name: stable across re-runs
    for axis in reversed(axes):
        order = {label: i for i, label in enumerate(axis_labels(frame, axis))}
        frame[AXIS + axis + "#"] = frame[AXIS + axis].map(order)
    keys = [AXIS + a + "#" for a in axes] + ["variant"]
    frame = frame.sort_values(keys, kind="stable").drop(columns=keys[:-1]).reset_index(drop=True)

    curves, history = {}, {}
    for run in variants:
        mine = []
        for stage, run_id in _stage_refs(client, eid, run):
            if run_id not in history:  # a shared stage is read once
                points = sorted(client.get_metric_history(run_id, LOSS), key=lambda m: (m.step, m.timestamp))
                history[run_id] = ([m.step for m in points], [m.value for m in points])
            steps, values = history[run_id]
            if steps:  # eval stages have no loss
                mine.append(Curve(stage, run_id, steps, values))
        curves[run.info.run_name] = mine
    items = {run.info.run_name: _item_values(client, eid, run) for run in variants}
    return SweepData(tracking_uri, experiment, sweep_run, frame, curves, axes, notes,
                     {k: v for k, v in items.items() if v})


def _item_values(client, experiment_id: str, variant) -> dict[str, dict[str, float]]:
    """Per-item scores of the variant's headline per-item-mean metrics, from the results.json of
    its eval stage(s) (their vlmsweep.output dir, through vlmsweep.storage); {} where none is
    readable (an older run, a work dir gone): the report then compares scores unpaired."""
    import json

    from vlmsweep import storage
    from vlmsweep.eval.benchmarks import HEADLINE
    from vlmsweep.eval.stderr import item_values

    headline = dict(HEADLINE)
    out = {}
    for _, run_id in _stage_refs(client, experiment_id, variant):
        try:
            where = client.get_run(run_id).data.tags.get(OUTPUT)
            if not where or not storage.is_file(storage.join(where, RESULTS)):
                continue
            results = json.loads(storage.read_text(storage.join(where, RESULTS)))
        except Exception as err:  # noqa: BLE001  a store or file we cannot read costs the pairing only
            log.warning("no per-item results for %s: %s", variant.info.run_name, str(err).splitlines()[0] if str(err) else err)
            continue
        for bench, scored in results.items():
            metric = headline.get(bench)
            values = item_values(bench, metric, (scored or {}).get("items") or []) if metric else None
            if values:
                out[f"eval/{bench}/{metric}"] = values
    return out


def variant_outputs(work, sweep: str, variant: str) -> list[str]:
    """The stage outputs (each stage run's `vlmsweep.output`) of VARIANT's latest attempt in SWEEP,
    in the order its stages ran: what `export`, `chat` and `demo` load a variant from.
    SweepNotFound, one line, names what is missing."""
    from mlflow.tracking import MlflowClient

    work.check_tracking_store(reading_sweep=sweep)
    client = MlflowClient(work.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        raise SweepNotFound(f"no sweep {sweep!r}: nothing was tracked at {work.tracking_uri}")
    eid = experiment.experiment_id
    sweep_run = _find_sweep(client, eid, sweep, f"at {work.tracking_uri}", [], work.uri)
    runs = _search(client, eid, f"tags.`{PARENT}` = {_q(sweep_run.info.run_id)} and tags.`{KIND}` = 'variant'")
    mine = [r for r in runs if r.info.run_name == variant]
    if not mine:
        names = sorted({r.info.run_name for r in runs})
        raise SweepNotFound(f"sweep {sweep!r} has no variant {variant!r}; its variants: {', '.join(names) or 'none'}")
    tags = (client.get_run(run_id).data.tags for _, run_id in _stage_refs(client, eid, mine[-1]))
    return [t[OUTPUT] for t in tags if t.get(OUTPUT)]
