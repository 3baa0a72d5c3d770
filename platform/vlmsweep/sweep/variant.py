"""Run one variant: its data, then its stages in order, each tracked as a nested MLflow run.

A stage's output directory is named by its identity hash, so a stage that already
finished (in this variant, an earlier run, or another variant with the same inputs)
is reused instead of trained again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from vlmsweep.config.load import dump_resolved
from vlmsweep.config.schema import VariantConfig
from vlmsweep.config.workdir import WorkDir
from vlmsweep.data.prepare import data_identity, ensure_splits, world_dir
from vlmsweep.eval.run import check_eval, evaluate, flat_metrics, format_table, make_judge
from vlmsweep.models.check import check_variant
from vlmsweep.train.stage import StageResult, run_stage, stage_id

from .ray_cluster import ensure_ray
from .tracking import Tracker


@dataclass
class VariantResult:
    name: str
    run_id: str
    stages: list[StageResult] = field(default_factory=list)
    eval: dict = field(default_factory=dict)


def stage_dirs(cfg: VariantConfig, work: WorkDir, identity: str) -> list[Path]:
    return [work.stages / f"{s.name}-{stage_id(cfg, i, identity)}" for i, s in enumerate(cfg.recipe.stages)]


def run_variant(cfg: VariantConfig, work: WorkDir, address: str | None = None, log=print) -> VariantResult:
    preset_root = str(work.presets)
    check_variant(cfg, preset_root)              # every config error before anything starts
    check_eval(cfg.eval)
    splits = ensure_splits(cfg.data, work.data)
    identity = data_identity(splits)
    ensure_ray(address)
    tracker = Tracker(work.tracking_uri)
    with tracker.variant_run(cfg) as variant_run:
        tracker.log_variant_config(variant_run, cfg, dump_resolved(cfg))
        result = VariantResult(cfg.name, variant_run)
        init_dir = None
        for index, (stage, out_dir) in enumerate(zip(cfg.recipe.stages, stage_dirs(cfg, work, identity))):
            sid = out_dir.name.rsplit("-", 1)[1]
            with tracker.stage_run(variant_run, stage.name, sid) as stage_run:
                tracker.log_stage_config(stage_run, stage)
                log(f"[{cfg.name}] stage {index + 1}/{len(cfg.recipe.stages)} {stage.name} → {out_dir}")
                res = run_stage(cfg, index, shard_dir=splits[stage.split], out_dir=str(out_dir), init_dir=init_dir,
                                preset_root=preset_root, storage_path=str(work.ray_storage),
                                sink=tracker.sink(stage_run))
                tracker.log_stage_result(stage_run, variant_run, stage.name, res, str(out_dir))
                s = res.summary
                log(f"[{cfg.name}] {stage.name}: {'reused' if res.reused else 'trained'} "
                    f"{s.get('steps')} steps, loss {s.get('first_loss') or 0:.3f} → {s.get('final_loss') or 0:.3f}, "
                    f"{s.get('tokens_per_s', 0):.0f} real tokens/s, skipped {s.get('skipped') or {}}, "
                    f"truncated {s.get('truncated', 0)}")
            result.stages.append(res)
            init_dir = str(out_dir)
        if cfg.eval.benchmarks:
            result.eval = run_eval_stage(cfg, work, init_dir, tracker, variant_run, log)
    return result


def run_eval_stage(cfg: VariantConfig, work: WorkDir, checkpoint: str, tracker: Tracker, variant_run: str,
                   log=print) -> dict:
    """The last stage: score the final checkpoint; results are reused when nothing changed."""
    e = cfg.eval
    data = e.data or str(world_dir(cfg.data, work.data) / "bench")
    key = hashlib.sha256(json.dumps([Path(checkpoint).name, e.model_dump(mode="json"), data]).encode()).hexdigest()[:16]
    out = work.stages / f"eval-{key}"
    with tracker.stage_run(variant_run, "eval", key) as run:
        done = out / "results.json"
        reused = done.is_file()
        if reused:
            results = json.loads(done.read_text())
        else:
            log(f"[{cfg.name}] eval on {', '.join(e.benchmarks)} → {out}")
            results = evaluate(checkpoint, e.benchmarks, data, out, work.presets, batch_size=e.batch_size,
                               max_new_tokens=e.max_new_tokens, log=log, judge=make_judge(e.judge))
            done.write_text(json.dumps(results, default=str))
        tracker.log_eval(run, variant_run, flat_metrics(results), str(out), reused=reused)
        log(format_table(results))
    return results
