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


# Ray Data's console lines in a demo run (ray 2.60), as the driver receives them from the workers
DATA_LINES = [
    "Starting execution of Dataset dataset_0356T4yUNNA9XRh2lKTftr_0. Full logs are in /tmp/ray/session_x/logs/ray-data",
    "Execution plan of Dataset dataset_0356T4yUNNA9XRh2lKTftr_0: InputDataBuffer[Input] -> "
    "TaskPoolMapOperator[MapBatches(_read_shards)->Project->MapBatches(prepare_table)]",
    "\u2714\ufe0f  Dataset train_rank0_0356T65vrze9Jx8r4Lctdl_3 execution finished in 0.00 seconds",
    "Progress bars disabled. To enable, set `ray.data.DataContext.get_current().enable_progress_bars = True`.",
    "/v/lib/python3.11/site-packages/ray/data/_internal/execution/interfaces/execution_options.py:436: "
    "RayDeprecationWarning: `ExecutionOptions.exclude_resources` is deprecated and will be removed after January 2027.",
    "  self.exclude_resources = exclude_resources",
]


def test_ray_data_execution_lines_are_dropped_and_its_errors_kept(monkeypatch):
    monkeypatch.delenv("RAY_DEDUP_LOGS_SKIP_REGEX", raising=False)
    configure_driver_logs(embedded=False)
    skip = os.environ.pop("RAY_DEDUP_LOGS_SKIP_REGEX")
    assert [line for line in DATA_LINES if not re.search(skip, line)] == []
    for kept in ("[pretrain] data ready in 6.8 s (prepared and cached: /w/prepared/d48f)",
                 "Exception raised in creation task: The actor died because of an error raised in its creation task",
                 "ValueError: shard-00001.parquet: row 7: conversations[1].text is empty"):
        assert not re.search(skip, kept)
