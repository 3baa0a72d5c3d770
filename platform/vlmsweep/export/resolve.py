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
    from vlmsweep.report.collect import SweepNotFound, variant_outputs   # the one reader of MLflow records

    try:
        outputs = [storage.normalize(o) for o in variant_outputs(work, sweep, variant) if is_complete(o)]
    except SweepNotFound as err:
        raise InputError([("CHECKPOINT", str(err))]) from None
    starts = {storage.normalize(m["init"]) for m in map(read_manifest, outputs) if m.get("init")}
    final = [o for o in outputs if o not in starts]
    if not final:
        raise InputError([("CHECKPOINT", f"variant {variant!r} of sweep {sweep!r} has no finished training stage")])
    return final[-1]
