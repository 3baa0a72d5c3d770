"""Connecting to Ray: an embedded local cluster by default, or an existing one by address."""

from __future__ import annotations

import os


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    # keep workers' stdout (our stage logs) but not Ray's own progress chatter
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not _has_gpu() else "cuda")
    # ray.train.report is drained by the controller at this interval (default 2 s): a
    # checkpoint report would otherwise stall every worker for up to 2 s
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, configure_logging=True,
                 logging_level="WARNING")


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
