"""Faults injected on purpose, so tests can show a stage survives them (training.fail_at_step
and training.fail_with; both stay out of the stage id).

Each fault fires once per stage output: a marker in the output's location records that it
fired, so the retry (Ray Train's, or a `--resume`) meets a healthy machine, as it would
after a crashed worker is replaced or a full disk is cleared.
"""

from __future__ import annotations

import errno
import os

from vlmsweep import storage

MARKER = ".failure_injected"


def _fire_once(job: dict) -> bool:
    marker = storage.join(job["out_dir"], MARKER)
    if storage.exists(marker):
        return False
    storage.write_text(marker, "")
    return True


def _armed(job: dict, kind: str, step: int | None) -> bool:
    t = job["stage"]["training"]
    return t["fail_at_step"] is not None and t["fail_with"] == kind and (step is None or step == t["fail_at_step"])


def exit_hard(job: dict, step: int, rank: int, world: int) -> None:
    """("exit") The last rank dies at `fail_at_step`, as a crashed worker would: no cleanup."""
    if rank == world - 1 and _armed(job, "exit", step) and _fire_once(job):
        os._exit(1)


def disk_full(job: dict, kind: str, step: int | None = None) -> None:
    """("enospc_checkpoint", "enospc_output") The disk fills up while this rank writes a
    checkpoint at `fail_at_step`, or the stage output: the OSError the write would raise."""
    if _armed(job, kind, step) and _fire_once(job):
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (injected: training.fail_with={kind})")
