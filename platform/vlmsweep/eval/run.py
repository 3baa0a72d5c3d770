"""Evaluate a checkpoint on benchmarks: one results JSON per benchmark and a table.

A results JSON holds the metrics, the counts (items, missing or unreadable images, parse
fallbacks) and every item's prediction, parsed answer and verdict, so a score can always
be traced to the answers behind it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from vlmsweep import storage
from vlmsweep.config.errors import ConfigError, InputError

from .benchmarks import get_benchmark
from .generate import LoadedModel, answer, load_checkpoint

# the offline benchmarks: every one the synthetic world writes (MM-Vet needs a judge and real data)
WORLD_BENCHMARKS = ("vqav2", "gqa", "textvqa", "scienceqa", "pope", "mme", "mmmu")


def check_eval(cfg) -> None:
    """Every benchmark name known (one error listing all unknown ones, with the allowed names)."""
    problems = []
    for i, name in enumerate(cfg.benchmarks):
        try:
            get_benchmark(name)
        except ConfigError as err:
            problems.append((f"eval.benchmarks.{i}", err.problems[0][1]))
    if problems:
        raise ConfigError(problems)


def check_benches(names: list[str], data_dir: str | None = None) -> None:
    """`vlmsweep eval`'s --bench names all known and, in a local --data dir, each one's folder
    there: checked before a model is loaded."""
    problems = []
    for name in names:
        try:
            get_benchmark(name)
        except ConfigError as err:
            problems.append(("--bench", err.problems[0][1]))
    if data_dir and not storage.is_remote(str(data_dir)):
        missing = [n for n in names if not (Path(data_dir) / n).is_dir()]
        if missing and not problems:
            problems.append(("--data", f"{data_dir} has no folder for {', '.join(missing)} (one folder per benchmark)"))
    if problems:
        raise InputError(problems)


def make_judge(cfg):
    """The configured answer judge (an OpenAI-compatible endpoint), or None."""
    if cfg is None:
        return None
    from .benchmarks.mmvet import OpenAIJudge

    return OpenAIJudge(cfg.base_url, cfg.model, api_key_env=cfg.api_key_env)


def evaluate_model(model: LoadedModel, benches: list[str], data_dir: str | Path, out_dir: str | Path,
                   batch_size: int = 16, max_new_tokens: int = 32, log=print, judge=None) -> dict[str, dict]:
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in benches:
        bench = get_benchmark(name)
        bench_dir = data_dir / name
        if not bench_dir.is_dir():
            raise FileNotFoundError(f"benchmark {name!r}: no directory {bench_dir}")
        started = time.perf_counter()
        items = bench.load_items(bench_dir)
        answers = answer(model, items, bench_dir / "images", batch_size=batch_size, max_new_tokens=max_new_tokens)
        extra = {"judge": judge} if judge is not None and name == "mmvet" else {}
        scored = bench.score(answers.texts, bench.load_annotations(bench_dir), **extra)
        scored.setdefault("counts", {}).update(items=len(items), answered=len(answers.texts),
                                               unusable_image=len(answers.unusable))
        scored["unusable"] = answers.unusable
        scored.update(benchmark=name, checkpoint=model.stage_dir, batch_size=batch_size,
                      seconds=round(time.perf_counter() - started, 2))
        (out_dir / f"{name}.json").write_text(json.dumps(scored, indent=1, default=str))
        results[name] = scored
        if answers.unusable:
            log(f"[eval] {name}: {len(answers.unusable)} item(s) skipped, image missing or unreadable")
    return results


def evaluate(stage_dir: str | Path, benches: list[str], data_dir: str | Path, out_dir: str | Path,
             preset_root: str | Path, batch_size: int = 16, max_new_tokens: int = 32, log=print,
             judge=None) -> dict[str, dict]:
    """Evaluate a stage output; `data_dir` and `out_dir` may be work-dir URIs: benchmark files are
    read from a node-local copy, and results are written locally, then uploaded."""
    data_local = storage.local_copy(str(data_dir), f"bench/{data_dir}")
    remote_out = storage.is_remote(str(out_dir))
    local_out = Path(tempfile.mkdtemp(prefix="eval-")) if remote_out else Path(out_dir)
    try:
        results = evaluate_model(load_checkpoint(stage_dir, preset_root), benches, data_local, local_out,
                                 batch_size, max_new_tokens, log, judge)
        if remote_out:
            storage.upload_dir(local_out, str(out_dir))
    finally:
        if remote_out:
            shutil.rmtree(local_out, ignore_errors=True)
    return results


def flat_metrics(results: dict[str, dict]) -> dict[str, float]:
    """{"<bench>/<metric>": value} over every numeric metric (the names MLflow gets as eval/...)."""
    return {f"{bench}/{k}": float(v) for bench, r in results.items()
            for k, v in (r.get("metrics") or {}).items() if isinstance(v, (int, float))}


def format_table(results: dict[str, dict]) -> str:
    lines = [f"{'benchmark':<11} {'metric':<13} {'score':>8} {'items':>6}  notes"]
    for name, r in results.items():
        metrics = r.get("metrics") or {}
        head = get_benchmark(name).metrics
        shown = [m for m in head if m in metrics] or list(metrics)[:1]
        notes = "; ".join(r.get("notes") or []) if r.get("skipped") else ""
        if not shown:
            lines.append(f"{name:<11} {'-':<13} {'-':>8} {r['counts'].get('items', 0):>6}  {notes or 'not scored'}")
        for k, metric in enumerate(shown):
            lines.append(f"{name if k == 0 else '':<11} {metric:<13} {metrics[metric]:>8.2f} "
                         f"{r['counts'].get('items', 0) if k == 0 else '':>6}  {notes if k == 0 else ''}")
    return "\n".join(lines)
