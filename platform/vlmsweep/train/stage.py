"""Run one training stage as one Ray Train TorchTrainer (V2 API).

The driver prepares what workers need (a picklable job), builds one Ray Data stream per
worker (a small split's rows prepared once for all ranks, or found in the work dir's cache of
prepared rows: data/stream.py), and fits. A worker failure is retried by Ray Train from the
last checkpoint (`training.max_failures`); the stage output appears only when the stage finished.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass

from vlmsweep import storage
from vlmsweep.config.schema import VariantConfig
from vlmsweep.config.workdir import WorkDir
from vlmsweep.data.mix import TextOnlyMix, plan_mix, why_not
from vlmsweep.data.order import ORDER_VERSION
from vlmsweep.data.prepared import stage_datasets
from vlmsweep.data.shards import read_manifest as read_shard_manifest
from vlmsweep.data.stream import PrepSpec
from vlmsweep.data.tokenize import LABELS_VERSION
from vlmsweep.models.check import chat_template
from vlmsweep.models.connectors import connector_output_tokens
from vlmsweep.models.llm import load_tokenizer
from vlmsweep.models.presets import zoo_key
from vlmsweep.models.fused import model_geometry

from .stage_output import is_complete, read_manifest

# Training fields that change how a stage runs but not what it computes: checkpoints resume
# exactly, logging is a side channel, and CPUs per worker only set placement. Worker count,
# batch, seed and data do change the math, so they stay in the identity.
NOT_IN_IDENTITY = frozenset({"checkpoint_every", "log_every", "max_failures", "cpus_per_worker", "fail_at_step",
                             "fail_with"})


def _identity_of_stage(stage) -> dict:
    out = stage.model_dump(mode="json")
    out["training"] = {k: v for k, v in out["training"].items() if k not in NOT_IN_IDENTITY}
    return out


def stage_id(cfg: VariantConfig, index: int, data_identity: str, weights: dict | None = None,
             mixes: list[dict | None] | None = None) -> str:
    """A hash of everything that determines the stage's output: the model, the data, the seed
    and every stage up to this one (earlier stages are its inputs). Names and times aren't in it.

    weights: content keys of checkpoints whose name doesn't pin their content (zoo:<name>,
    rebuilt in place when the world or the zoo spec changes); see weights_identity.
    mixes: per stage, the identity of the text-only mix its split gets (None where it gets
    none: a captions split is the same whatever data.text_only_ratio says)."""
    model = {**cfg.model.model_dump(mode="json"), "vision": vision_identity(cfg)}
    if not cfg.model.llm.image_delimiters:   # absent when off: ids from before the option stay valid
        del model["llm"]["image_delimiters"]
    payload = {"model": model, "data": data_identity, "seed": cfg.seed,
               "stages": [_identity_of_stage(s) for s in cfg.recipe.stages[:index + 1]],
               "labels": LABELS_VERSION, "order": ORDER_VERSION}
    if weights:  # only zoo:<name> checkpoints need it: a Hub name or a path names its content
        payload["weights"] = weights
    if mixes and any(mixes[:index + 1]):   # absent otherwise: ids from before the knob stay valid
        payload["text_only_mix"] = mixes[:index + 1]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def vision_identity(cfg: VariantConfig) -> dict | list:
    """model.vision as JSON, without `image_size` where unset: ids (and prepared-data keys) from
    before the field existed stay valid."""
    vision = cfg.model.model_dump(mode="json")["vision"]
    for encoder in vision if cfg.model.fused else [vision]:
        if encoder["image_size"] is None:
            del encoder["image_size"]
    return vision


def weights_identity(cfg: VariantConfig, work: WorkDir) -> dict:
    """{component: content key} for zoo:<name> checkpoints ("unbuilt" before `vlmsweep zoo build`)."""
    zoo = [(field.removeprefix("model."), m) for field, m in cfg.model.checkpoints()
           if (m.checkpoint or "").startswith("zoo:")]
    if not zoo:
        return {}
    preset_root = work.model_root()
    # keys "vision" / "llm", and "vision.<i>" for fused encoders
    return {part: zoo_key(m.checkpoint, preset_root) or "unbuilt" for part, m in zoo}


def text_only_mix(cfg: VariantConfig, shard_dir: str) -> TextOnlyMix | None:
    """The mix `data.text_only_ratio` asks of this split (None: none, or the split has one kind)."""
    return plan_mix(read_shard_manifest(shard_dir).get("modalities"), cfg.data.text_only_ratio, cfg.seed)


def prep_spec(cfg: VariantConfig, index: int, work: WorkDir) -> PrepSpec:
    stage = cfg.recipe.stages[index]
    preset_root = work.model_root()
    geometry = model_geometry(cfg.model, preset_root)
    channels = 3 * len(cfg.model.encoders())   # fused encoders' pixels are stacked along channels
    size = geometry.image_size
    return PrepSpec(
        vision=vision_identity(cfg), llm=cfg.model.llm.model_dump(mode="json"),
        work=work.uri,
        template="plain" if stage.template == "plain" else chat_template(cfg),
        image_tokens=connector_output_tokens(cfg.model.connector.name, geometry.num_tokens,
                                             dict(cfg.model.connector.options)),
        image_shape=(channels, size, size), max_length=stage.training.max_length, overlong=stage.training.overlong)


@dataclass
class StageResult:
    name: str
    out_dir: str
    reused: bool
    summary: dict


def run_stage(cfg: VariantConfig, index: int, *, work: WorkDir, shard_dir: str, out_dir: str, init_dir: str | None,
              sink=None, callbacks: list | None = None) -> StageResult:
    """Train stage `index` of the variant from `init_dir` (the previous stage's output) into `out_dir`
    (locations in `work`); Ray Train keeps its checkpoints in the work dir's `ray/`, so a worker group
    restarted on other nodes resumes from them."""
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    from .worker import train_stage

    stage = cfg.recipe.stages[index]
    if is_complete(out_dir):
        return StageResult(stage.name, out_dir, True, read_manifest(out_dir))
    started = time.perf_counter()
    t = stage.training
    spec = prep_spec(cfg, index, work)
    tokenizer = load_tokenizer(cfg.model.llm, work.model_root())
    job = {"variant": cfg.model_dump(mode="json"), "stage_index": index, "stage": stage.model_dump(mode="json"),
           "prep": asdict(spec), "work": work.uri, "init_dir": init_dir, "out_dir": out_dir,
           "dataset": "train", "total_rows": read_shard_manifest(shard_dir)["rows"],
           "pad_id": tokenizer.pad_token_id, "sink": sink}
    # the zoo's content keys: a rebuilt zoo tokenizer or image processor prepares rows differently
    mix = text_only_mix(cfg, shard_dir)
    data = stage_datasets(shard_dir, t.workers, spec, prefix="train", identity=weights_identity(cfg, work), mix=mix)
    print(f"[{stage.name}] data ready in {time.perf_counter() - started:.1f} s ({data.how}"
          f"{': ' + data.prepared if data.prepared else ''})", flush=True)
    _report_mix(stage.name, cfg, shard_dir, mix, data.mix_counts)
    job["text_only_mix"] = data.mix_counts or (mix.identity() if mix else None)
    if mix is not None:   # an epoch is the rows the mix keeps (exactly, where prepared)
        manifest = read_shard_manifest(shard_dir)
        job["total_rows"] = data.rows if data.rows is not None else mix.expected_rows(manifest["modalities"],
                                                                                     manifest["rows"])
    storage_path, storage_fs = storage.ray_storage(work.ray_storage)
    # each worker reads the dataset named for its rank: the loop asks for "train_rank{r}"
    trainer = TorchTrainer(
        _per_rank(train_stage),
        train_loop_config=job,
        scaling_config=ScalingConfig(num_workers=t.workers, use_gpu=t.gpus_per_worker > 0,
                                     resources_per_worker={"CPU": t.cpus_per_worker,
                                                           **({"GPU": t.gpus_per_worker} if t.gpus_per_worker else {})}),
        datasets=data.datasets,
        dataset_config=DataConfig(datasets_to_split=[]),
        run_config=RunConfig(name=storage.name(out_dir), storage_path=storage_path, storage_filesystem=storage_fs,
                             failure_config=FailureConfig(max_failures=t.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks or [],
                             # Ray Train's INFO lines (two per rank per checkpoint, worker-group set-up)
                             # stay in the session's ray-train-sys-*.log files, out of the sweep's log
                             logging_config=LoggingConfig(log_level="WARNING")),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    if not is_complete(out_dir):
        raise RuntimeError(f"stage {stage.name} ended without writing its output to {out_dir}")
    return StageResult(stage.name, out_dir, False, result.return_value or read_manifest(out_dir))


def _report_mix(stage_name: str, cfg: VariantConfig, shard_dir: str, mix, counts: dict | None) -> None:
    ratio = cfg.data.text_only_ratio
    if ratio is None:
        return
    if mix is None:
        reason = why_not(read_shard_manifest(shard_dir).get("modalities"), ratio)
        print(f"[{stage_name}] data.text_only_ratio={ratio} leaves this split as it is"
              f"{': ' + reason if reason else ''}", flush=True)
    elif counts:
        print(f"[{stage_name}] text-only mix: kept {counts['text_kept']} of {counts['text_total']} text-only rows and "
              f"{counts['image_kept']} of {counts['image_total']} with images: a share of "
              f"{counts['text_only_share']:.1%} (data.text_only_ratio={ratio})", flush=True)
    else:
        print(f"[{stage_name}] text-only mix: keeping {mix.keep_text:.1%} of text-only rows and {mix.keep_image:.1%} "
              f"of those with images (data.text_only_ratio={ratio}, streamed)", flush=True)


def _per_rank(fn):
    """Point the job at this worker's own dataset before calling the loop."""
    def loop(job: dict):
        import ray.train

        rank = ray.train.get_context().get_world_rank()
        return fn({**job, "dataset": f"{job['dataset']}_rank{rank}"})
    return loop
