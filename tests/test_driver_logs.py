"""What a sweep's user reads: stage lines pass Ray's log deduplication in order."""

from __future__ import annotations

import os
import re

from ray._private.ray_logging import LogDeduplicator

from vlmsweep.models.tuning import TuneRow, format_summary
from vlmsweep.sweep.ray_cluster import EMBEDDED_SKIPPED_LOGS, STAGE_LINES, configure_driver_logs


def _table(stage: str, llm_mode: str) -> list[str]:
    rows = [TuneRow("vision", "frozen", 0, 32384, 1e-3), TuneRow("connector", "full", 6272, 6272, 1e-3),
            TuneRow("llm", llm_mode, 107328 if llm_mode == "full" else 0, 107328, 1e-3)]
    return [f"[{stage}] {line}" for line in ["what trains:", *format_summary(rows).splitlines()]]


def test_a_stage_table_equal_to_an_earlier_one_prints_whole_and_in_order():
    clock = [0.0]
    batch = lambda pid, lines: {"ip": "127.0.0.1", "pid": pid, "lines": lines}  # noqa: E731
    for allow, whole in ((None, False), (STAGE_LINES, True)):
        dedup = LogDeduplicator(5, allow, None, _timesource=lambda: clock[0])
        dedup.deduplicate(batch(1, _table("finetune", "frozen")))     # variant A's finetune, rank 0
        clock[0] += 1
        out = dedup.deduplicate(batch(2, _table("finetune", "full")))  # variant B's, another process
        printed = [line for b in out for line in b["lines"]]
        # without the allow rule Ray holds back B's lines equal to A's: the table came out garbled
        assert (printed == _table("finetune", "full")) is whole, printed


def test_stage_lines_are_kept_and_report_and_state_api_lines_dropped(monkeypatch):
    assert re.search(STAGE_LINES, "[share_pretrain] rank 0 starts training 7.4 s after its process started")
    assert not re.search(STAGE_LINES, "[2026-11-30 05:57:22,496] [WARNING] [real_accelerator.py:213:get_accelerator]")
    for key in ("RAY_DEDUP_LOGS_ALLOW_REGEX", "RAY_DEDUP_LOGS_SKIP_REGEX"):
        monkeypatch.delenv(key, raising=False)
    report = ("Reporting training result 3: TrainingReport(checkpoint=Checkpoint(filesystem=local, path=/w/ray/x), "
              "metrics={'step': 10, 'loss': 4.78}, validation=False) from rank 1")
    configure_driver_logs(embedded=False)
    assert os.environ["RAY_DEDUP_LOGS_ALLOW_REGEX"] == STAGE_LINES
    skip = os.environ.pop("RAY_DEDUP_LOGS_SKIP_REGEX")
    assert re.search(skip, report) and not re.search(skip, EMBEDDED_SKIPPED_LOGS)
    configure_driver_logs(embedded=True)
    skip = os.environ["RAY_DEDUP_LOGS_SKIP_REGEX"]
    assert re.search(skip, report) and re.search(skip, EMBEDDED_SKIPPED_LOGS + " (actor abc)")
    assert not re.search(skip, "[finetune] rank 0 starts training 7.4 s after its process started")
