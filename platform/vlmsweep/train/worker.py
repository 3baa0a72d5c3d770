"""The Ray Train worker loop of one stage: build, restore, train, checkpoint, save.

Runs on every worker of the TorchTrainer. Rank 0 alone writes the stage output and calls
the metrics sink; every rank saves its part of each DeepSpeed checkpoint and reports it
to Ray, so a restarted worker group resumes from the last one (model, optimizer,
learning-rate progress and the exact data position).
"""

from __future__ import annotations

import json
import tempfile
import time

import torch
import torch.distributed as dist

from vlmsweep.config.load import dump_resolved
from vlmsweep.config.schema import VariantConfig
from vlmsweep.config.workdir import WorkDir
from vlmsweep.data.batching import StepAssembler
from vlmsweep.data.order import StreamOrder
from vlmsweep.data.packing import collate, pack
from vlmsweep.data.stream import PrepSpec, StreamState, iter_samples
from vlmsweep.models.tuning import apply_tuning, format_summary
from vlmsweep.models.vlm import build_vlm

from . import faults
from .engine import build_engine, full_parameters, lr_factor, set_lrs
from .stage_output import load_into, save_stage

CHECKPOINT_TAG = "stage_state"  # not "latest": DeepSpeed writes a pointer file by that name


def build_stage_model(cfg: VariantConfig, stage_index: int, preset_root: str, init_dir: str | None):
    """Pretrained parts + the previous stage's weights, with this stage's tuning applied."""
    torch.manual_seed(cfg.seed)  # the connector's init is part of what a seed decides
    stage = cfg.recipe.stages[stage_index]
    # built in fp32 whatever the precision: DeepSpeed casts to bf16/fp16 itself and keeps
    # fp32 master weights, which building in low precision would throw away
    vlm = build_vlm(cfg.model, preset_root, quantize_llm=stage.llm.mode == "qlora")
    if init_dir:
        load_into(vlm, init_dir)
    groups, rows = apply_tuning(vlm, stage)
    return vlm, groups, rows


def _all_sum(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def train_stage(job: dict) -> dict:
    """Entry point of `TorchTrainer(train_loop_per_worker=...)`; `job` comes from stage.py."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = VariantConfig.model_validate(job["variant"])
    index = job["stage_index"]
    stage = cfg.recipe.stages[index]
    t = stage.training
    spec = PrepSpec(**job["prep"])
    sink = job.get("sink") if rank == 0 else None
    pad_id = int(job["pad_id"])

    entered = time.perf_counter()
    vlm, groups, tune_rows = build_stage_model(cfg, index, WorkDir(job["work"]).model_root(), job["init_dir"])
    if rank == 0:
        # every line names its stage: sweep/ray_cluster.py STAGE_LINES keeps them in order
        print("\n".join(f"[{stage.name}] {line}" for line in ["what trains:", *format_summary(tune_rows).splitlines()]),
              flush=True)
    built = time.perf_counter()
    engine = build_engine(vlm, groups, t)
    engine_built = time.perf_counter()
    base_lrs = [g["lr"] for g in groups]
    if sink is not None:
        sink.open()   # its imports happen before the loop's clock starts, not inside it

    step, passed_global, stream, resumed_from = 0, 0.0, StreamState(), None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            _, client = engine.load_checkpoint(d, tag=CHECKPOINT_TAG)
        step, passed_global = client["step"], client["passed_global"]
        stream = StreamState.restore(client["stream"][rank], client["position"][rank], client["ahead"][rank])
        resumed_from = step
        print(f"[{stage.name}] rank {rank} resumed at step {step}, stream position {client['position'][rank]}", flush=True)

    order = StreamOrder(cfg.seed, rank, t.shuffle_buffer)   # the seed orders the data, too
    rows = pack(iter_samples(ray.train.get_dataset_shard(job["dataset"]), spec, stream, order),
                t.max_length, t.max_images_per_sequence, t.packing)
    steps = StepAssembler(rows, t.micro_batch, t.grad_accum, group_by_modality=not t.packing, agree=_agree)
    total_rows = job["total_rows"] * (t.epochs or 0)
    position, ahead = (stream.epoch, stream.index, stream.passed), []
    history, started = [], time.perf_counter()
    tokens_done = 0
    setup_s = time.time() - _process_start()
    if rank == 0:
        print(f"[{stage.name}] rank 0 starts training {setup_s:.1f} s after its process started "
              f"(model {built - entered:.1f} s, DeepSpeed {engine_built - built:.1f} s)", flush=True)
    while True:
        progress = step / t.steps if t.steps else passed_global / max(total_rows, 1)
        if progress >= 1:
            break
        faults.exit_hard(job, step + 1, rank, world)
        set_lrs(engine, base_lrs, lr_factor(progress, t))
        step_start = time.perf_counter()
        loss_sum = real = total = target = samples = 0.0
        step_rows = steps.next_step()
        for micro in step_rows.micro_batches:
            batch = collate(micro, pad_id, image_shape=spec.image_shape).to(engine.device)
            loss = engine(batch.input_ids, batch.targets, batch.pixel_values, batch.position_ids, batch.attention_mask)
            engine.backward(loss)
            engine.step()
            loss_sum += float(loss.detach())
            real, total = real + batch.real_tokens, total + batch.total_tokens
            target, samples = target + batch.target_tokens, samples + batch.samples
        position, ahead = steps.position()
        step += 1
        # rows passed by every rank up to its last trained row: the progress of epoch mode
        loss_sum, real, total, target, samples, passed = _all_sum(
            [loss_sum, real, total, target, samples, float(position[2])])
        passed_global = passed
        loss = loss_sum / (t.grad_accum * world)
        if not torch.isfinite(torch.tensor(loss)):
            raise FloatingPointError(f"stage {stage.name}: loss is not finite ({loss}) at step {step}")
        seconds = time.perf_counter() - step_start
        tokens_done += real
        metrics = {"step": step, "loss": loss, "lr": t.lr * lr_factor(progress, t),
                   "tokens_per_s": real / seconds, "real_token_fraction": real / max(total, 1),
                   "samples_per_step": samples, "target_tokens": target, "progress": min(progress, 1.0)}
        history.append(metrics)
        # ray.train.report is a barrier the controller polls (~2 s in Ray 2.60): only checkpoints
        # go through it; per-step metrics reach MLflow through the sink without a barrier
        # not after the last step: the stage output is saved right after the loop, and a crash
        # before that resumes from the previous checkpoint (a save + a ~2 s barrier per stage)
        if step % t.checkpoint_every == 0 and step != t.steps:
            _checkpoint(engine, step, passed_global, stream, position, ahead, metrics,
                        lambda: rank == world - 1 and faults.disk_full(job, "enospc_checkpoint", step))
        if sink is not None and step % t.log_every == 0:
            sink.log_metrics(metrics, step)

    elapsed = time.perf_counter() - started
    summary = _finish(job, cfg, stage, engine, vlm, stream, rank, tune_rows,
                      {"steps": step, "resumed_from_step": resumed_from, "wall_s": elapsed, "setup_s": setup_s,
                       "tokens": tokens_done,
                       "tokens_per_s": tokens_done / max(elapsed, 1e-9),
                       "final_loss": history[-1]["loss"] if history else None,
                       "first_loss": history[0]["loss"] if history else None,
                       **({"text_only_mix": job["text_only_mix"]} if job.get("text_only_mix") else {})})
    return summary


def _process_start() -> float:
    """When this worker's process started (epoch seconds): its imports and Ray Train's set-up count."""
    import psutil

    return psutil.Process().create_time()


def _gather(obj) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _agree(ready: list[bool]) -> int | None:
    """The first modality every rank has a full step of (a collective: all ranks call it together)."""
    flags = torch.tensor([int(r) for r in ready])
    if dist.is_initialized():
        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    return next((i for i, f in enumerate(flags.tolist()) if f), None)


def _checkpoint(engine, step: int, passed_global: float, stream: StreamState, position, ahead, metrics: dict,
                fault=lambda: None) -> None:
    """Every rank saves its part and reports it; Ray merges them into one checkpoint. A rank
    whose save fails (`fault`: an injected full disk) reports nothing: the checkpoint is not
    registered and the one before it stays the last."""
    import ray.train

    states, positions, aheads = _gather(stream.to_dict()), _gather(list(position)), _gather(ahead)
    with tempfile.TemporaryDirectory() as d:
        engine.save_checkpoint(d, tag=CHECKPOINT_TAG, client_state={
            "step": step, "passed_global": passed_global, "stream": states, "position": positions, "ahead": aheads})
        fault()
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _finish(job, cfg, stage, engine, vlm, stream, rank, tune_rows, summary) -> dict:
    # every row this stream read counts, trained on or still waiting in a buffer
    reports = _gather({"skipped": stream.skipped, "truncated": len(stream.truncated)})
    skipped: dict[str, list[str]] = {}
    for r in reports:
        for reason, entries in r["skipped"].items():
            skipped.setdefault(reason, []).extend(e[1] for e in entries)
    summary.update(skipped={k: len(v) for k, v in sorted(skipped.items())}, skipped_ids=skipped,
                   truncated=sum(r["truncated"] for r in reports),
                   tuning=[row.__dict__ for row in tune_rows])
    with full_parameters(engine):
        if rank == 0:
            faults.disk_full(job, "enospc_output")   # the disk fills up while rank 0 writes
            save_stage(vlm, job["out_dir"], stage=stage.name, files={"skipped.json": json.dumps(skipped, indent=1)},
                       modes={c: tc.mode for c, tc in stage.components().items()}, init_dir=job["init_dir"],
                       config_yaml=dump_resolved(cfg), summary={k: v for k, v in summary.items() if k != "skipped_ids"})
    if dist.is_initialized():
        dist.barrier()
    return {k: v for k, v in summary.items() if k != "skipped_ids"}
