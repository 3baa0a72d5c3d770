"""DeepSpeed: the one place an engine is built, and the learning-rate schedule it follows."""

from __future__ import annotations

import math
import os
import sys
import warnings
from contextlib import contextmanager

import torch

from vlmsweep.config.schema import TrainingConfig


def deepspeed_config(t: TrainingConfig) -> dict:
    return {
        "train_batch_size": t.global_batch,
        "train_micro_batch_size_per_gpu": t.micro_batch,
        "gradient_accumulation_steps": t.grad_accum,
        "gradient_clipping": t.max_grad_norm,
        "zero_optimization": {"stage": t.zero_stage},
        # torch_adam: the PyTorch AdamW, so no fused op is JIT-compiled on a cold machine (~40 s)
        "optimizer": {"type": "AdamW", "params": {"lr": t.lr, "betas": [0.9, 0.999], "eps": 1e-8,
                                                  "weight_decay": t.weight_decay, "torch_adam": True}},
        "bf16": {"enabled": t.precision == "bf16"},
        "fp16": {"enabled": t.precision == "fp16"},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def import_deepspeed():
    """`import deepspeed`, without two imports that cost every Train worker ~1-2 s of CPU each
    (measured on 2 CPUs) and that no stage of ours uses:
    - mlflow: DeepSpeed's autotuner imports it at module level (`try: import mlflow`) to log
      autotuning runs; importing mlflow pulls in pandas, fastapi and its GenAI modules. It is
      hidden while deepspeed is imported (the autotuner then sees no mlflow), and importable
      again afterwards: a rank-0 worker with a metrics sink imports it for real (worker.py).
    - Muon: ZeRO checks `isinstance(optimizer, MuonWithAuxAdam)`, and importing that module
      wraps its update functions in torch.compile (torch._inductor's import). Our optimizer
      is torch's AdamW (deepspeed_config), never Muon: its module is imported here with
      DeepSpeed's compile decorator as the identity, so nothing there is compiled.
    """
    if "deepspeed" in sys.modules:
        return sys.modules["deepspeed"]
    hidden = "mlflow" not in sys.modules
    if hidden:
        sys.modules["mlflow"] = None  # an import of it raises ImportError
    try:
        import deepspeed
    finally:
        if hidden and sys.modules.get("mlflow", 0) is None:
            del sys.modules["mlflow"]
    from deepspeed.runtime import compiler

    compile_ = compiler.compile
    compiler.compile = lambda: (lambda fn: fn)
    try:
        import deepspeed.runtime.zero.muon.muon_optimizer  # noqa: F401
    except ImportError:
        pass
    finally:
        compiler.compile = compile_
    return deepspeed


def use_stage_accelerator(t: TrainingConfig) -> None:
    """The stage's own resources choose DeepSpeed's accelerator. A stage without GPUs trains on
    the CPU, on a machine with GPUs too: Ray leaves a GPU visible to a worker that asked for
    none (it only sets CUDA_VISIBLE_DEVICES for GPUs it assigns), and DeepSpeed, detecting it,
    would have rank r ask for cuda:r, which a 1-GPU machine lacks. A stage with GPUs sees only
    its own, and DeepSpeed detects CUDA (or takes a DS_ACCELERATOR the user set). DeepSpeed
    reads the variable once, when first imported."""
    if t.gpus_per_worker:
        return
    if "deepspeed" not in sys.modules:
        os.environ["DS_ACCELERATOR"] = "cpu"
        return
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":   # imported earlier in this process, as cuda
        raise RuntimeError(f"a stage without GPUs, but DeepSpeed already chose {get_accelerator().device_name()}")


def build_engine(model: torch.nn.Module, groups: list[dict], t: TrainingConfig):
    """DeepSpeed engine over the trainable parameter groups (each keeps its own lr)."""
    import importlib

    use_stage_accelerator(t)
    deepspeed = import_deepspeed()
    if deepspeed.accelerator.get_accelerator().device_name() == "cpu":
        # On CPU, DeepSpeed JIT-compiles a shared-memory collective op on first use (~50 s on a
        # cold machine, every fresh CI machine); gloo's own all-reduce is what we use anyway.
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    # ZeRO's partitioned step calls torch's deprecated all_gather_into_tensor: a FutureWarning
    # from every worker of every stage, about DeepSpeed's code, that no user can act on
    warnings.filterwarnings("ignore", message="`torch.distributed.all_gather_into_tensor` is deprecated",
                            category=FutureWarning)
    # "name" is ours (for logs); optimizers only need params, lr and weight_decay
    clean = [{k: v for k, v in g.items() if k != "name"} for g in groups]
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=clean, config=deepspeed_config(t))
    return engine


def lr_factor(progress: float, t: TrainingConfig) -> float:
    """Linear warmup, then cosine / linear decay / constant, as a function of progress in [0, 1].

    Why our own and not a torch LRScheduler: in epoch mode the number of steps is not known
    in advance (packing decides how many samples a step holds), so the schedule follows the
    fraction of data consumed; DeepSpeed's schedulers would also overwrite the per-component
    learning rates with one value.
    """
    if t.warmup_ratio and progress < t.warmup_ratio:
        return max(progress / t.warmup_ratio, 1e-3)
    rest = (progress - t.warmup_ratio) / max(1e-12, 1 - t.warmup_ratio)
    rest = min(max(rest, 0.0), 1.0)
    if t.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * rest))
    if t.schedule == "linear":
        return 1 - rest
    return 1.0


def set_lrs(engine, base_lrs: list[float], factor: float) -> None:
    for group, base in zip(engine.optimizer.param_groups, base_lrs):
        group["lr"] = base * factor


@contextmanager
def full_parameters(engine):
    """Full (gathered) parameters on every rank: needed under ZeRO-3 before saving weights."""
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
            yield
    else:
        yield
