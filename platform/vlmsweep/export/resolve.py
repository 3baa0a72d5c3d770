"""CHECKPOINT on the command line: a finished stage directory, or SWEEP/VARIANT.

SWEEP/VARIANT is looked up in the work dir's MLflow record (what `vlmsweep report` reads):
the sweep by name or run id, its latest run of VARIANT, and that variant's stage runs,
whose `vlmsweep.output` tag names each stage's output. The variant's model is its last
training stage: the finished output no other of its stages starts from (eval stages have
no manifest, so they never count).
"""

from __future__ import annotations

from vlmsweep import storage
from vlmsweep.config.errors import InputError
from vlmsweep.train.stage_output import is_complete, read_manifest

OUTPUT_TAG = "vlmsweep.output"   # sweep/tracking.py: start_stage


def resolve_checkpoint(spec: str, work) -> str:
    """A finished stage output's location for `spec` (a stage dir, or SWEEP/VARIANT in `work`)."""
    if is_complete(spec):
        return spec
    if storage.exists(spec):
        raise InputError([("CHECKPOINT", f"{spec} is not a finished stage output (no manifest.json there)")])
    sweep, _, variant = spec.rstrip("/").rpartition("/")
    if not sweep or not variant:
        raise InputError([("CHECKPOINT", f"{spec}: no such stage directory; give a stage output "
                                         "(WORK_DIR/stages/...) or SWEEP/VARIANT")])
    return variant_stage_dir(work, sweep, variant)


def variant_stage_dir(work, sweep: str, variant: str) -> str:
    from mlflow.tracking import MlflowClient

    from vlmsweep.report.collect import (EXPERIMENT, KIND, PARENT, SweepNotFound, _find_sweep, _q, _search,
                                         _stage_refs)

    field = "CHECKPOINT"
    work.check_tracking_store(reading_sweep=sweep)
    client = MlflowClient(work.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        raise InputError([(field, f"no sweep {sweep!r}: nothing was tracked at {work.tracking_uri}")])
    eid = experiment.experiment_id
    try:
        sweep_run = _find_sweep(client, eid, sweep, f"at {work.tracking_uri}", [], work.uri)
    except SweepNotFound as err:
        raise InputError([(field, str(err))]) from None
    runs = _search(client, eid, f"tags.`{PARENT}` = {_q(sweep_run.info.run_id)} and tags.`{KIND}` = 'variant'")
    mine = [r for r in runs if r.info.run_name == variant]
    if not mine:
        names = sorted({r.info.run_name for r in runs})
        raise InputError([(field, f"sweep {sweep!r} has no variant {variant!r}; its variants: "
                                  f"{', '.join(names) or 'none'}")])
    outputs = []
    for _, run_id in _stage_refs(client, eid, mine[-1]):   # latest attempt; stages in the order they ran
        out = client.get_run(run_id).data.tags.get(OUTPUT_TAG)
        if out and is_complete(out):
            outputs.append(storage.normalize(out))
    starts = {storage.normalize(m["init"]) for m in map(read_manifest, outputs) if m.get("init")}
    final = [o for o in outputs if o not in starts]
    if not final:
        raise InputError([(field, f"variant {variant!r} of sweep {sweep!r} has no finished training stage")])
    return final[-1]
