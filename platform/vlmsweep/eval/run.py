"""Evaluate a checkpoint on benchmarks, or score answers already given: one results JSON per
benchmark, the answers in LLaVA's answers-file format, each benchmark's official output files
(EvalAI submission, MME eval-tool txt, MM-Vet grader files), and a table.

A results JSON holds the metrics, the counts (questions, answers, missing or unreadable
images, parse fallbacks), every scored question's answer, parse and verdict, and the answers
themselves, so a score can always be traced to the answers behind it and re-scored.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from vlmsweep import storage
from vlmsweep.config.errors import ConfigError, InputError

from .benchmarks import BENCHMARKS, WORLD_BENCHMARKS, Answer, get_benchmark
from .benchmarks.answers import read_answers, write_answers
from .chance import above_chance, add_chance
from .generate import LoadedModel, answer, load_checkpoint, placement
from .stderr import add_stderr

__all__ = ["WORLD_BENCHMARKS", "check_benches", "check_eval", "evaluate", "evaluate_model", "flat_metrics",
           "format_table", "make_judge", "score_answers"]


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
    there in its official layout: checked before a model is loaded."""
    problems = []
    for name in names:
        try:
            get_benchmark(name)
        except ConfigError as err:
            problems.append(("--bench", err.problems[0][1]))
    if data_dir and not storage.is_remote(str(data_dir)) and not problems:
        for name in names:
            try:
                get_benchmark(name).folder(data_dir)
            except ConfigError as err:
                problems.append(("--data", str(err)))
    if problems:
        raise InputError(problems)


def make_judge(cfg):
    """The configured answer judge (an OpenAI-compatible endpoint), or None."""
    if cfg is None:
        return None
    from .benchmarks.mmvet.judge import OpenAIJudge

    return OpenAIJudge(cfg.base_url, cfg.model, api_key_env=cfg.api_key_env)


def _score(bench, answers: list[Answer], key, judge) -> dict:
    """The benchmark's scored result, with each metric's standard error under "stderr", and its
    chance level and permutation p-value under "chance" and "chance_p" (eval/chance.py)."""
    scored = add_stderr(bench.name, bench.score(answers, key, judge=judge if bench.needs_judge else None))
    return add_chance(bench, answers, key, scored)


def _finish(bench, answers: list[Answer], key, folder: Path | None, out_dir: Path, judge, **extra) -> dict:
    """Score, write the answers file and the benchmark's official outputs, return the result."""
    scored = _score(bench, answers, key, judge)
    write_answers(out_dir / "answers" / f"{bench.name}.jsonl", answers)
    scored["files"] = [f"answers/{bench.name}.jsonl",
                       *bench.write_outputs(answers, key, folder, out_dir, scored=scored)]
    scored["answers"] = [{"question_id": a.question_id, "prompt": a.prompt, "text": a.text} for a in answers]
    scored.update(benchmark=bench.name, **extra)
    return scored


def _placed(model: LoadedModel) -> dict:
    """Where the answers were generated, kept with the scores: bf16 answers may differ."""
    weight = next(model.vlm.parameters())
    return {"device": weight.device.type, "dtype": str(weight.dtype).removeprefix("torch.")}


def _write(out_dir: Path, scored: dict) -> None:
    (out_dir / f"{scored['benchmark']}.json").write_text(json.dumps(scored, indent=1, default=str))


def evaluate_model(model: LoadedModel, benches: list[str], data_dir: str | Path, out_dir: str | Path,
                   batch_size: int = 16, max_new_tokens: int = 32, log=print, judge=None) -> dict[str, dict]:
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in benches:
        bench = get_benchmark(name)
        folder = bench.folder(data_dir)
        started = time.perf_counter()
        items = bench.load_items(folder)
        key = bench.folder_key(folder)
        got = answer(model, items, folder, batch_size=batch_size, max_new_tokens=max_new_tokens)
        answers = [Answer.of(item, got.texts[i], bench.answer_prompt(item)) for i, item in enumerate(items)
                   if i in got.texts]
        unusable = [{"question_id": items[i].question_id, "reason": why} for i, why in sorted(got.unusable.items())]
        scored = _finish(bench, answers, key, folder, out_dir, judge, checkpoint=model.stage_dir,
                         batch_size=batch_size, unusable=unusable, data=str(folder), **_placed(model),
                         seconds=round(time.perf_counter() - started, 2))
        scored["counts"].update(items=len(items), generated=len(got.texts), unusable_image=len(unusable))
        _write(out_dir, scored)
        results[name] = scored
        if unusable:
            log(f"[eval] {name}: {len(unusable)} item(s) skipped, image missing or unreadable")
    return results


def evaluate(stage_dir: str | Path, benches: list[str], data_dir: str | Path, out_dir: str | Path,
             preset_root: str | Path, batch_size: int = 16, max_new_tokens: int = 32, log=print,
             judge=None, device: str = "auto", dtype: str = "auto") -> dict[str, dict]:
    """Evaluate a stage output; `data_dir` and `out_dir` may be work-dir URIs: benchmark files are
    read from a node-local copy, and results are written locally, then uploaded. `device` and
    `dtype`: see generate.placement (by default the GPU in bf16 where there is one)."""
    where, precision = placement(device, dtype)
    log(f"[eval] generating on {where} in {str(precision).removeprefix('torch.')}, batches of {batch_size}")
    data_local = storage.local_copy(str(data_dir), f"bench/{data_dir}")
    remote_out = storage.is_remote(str(out_dir))
    local_out = Path(tempfile.mkdtemp(prefix="eval-")) if remote_out else Path(out_dir)
    try:
        results = evaluate_model(load_checkpoint(stage_dir, preset_root, where, precision), benches, data_local, local_out,
                                 batch_size, max_new_tokens, log, judge)
        if remote_out:
            storage.upload_dir(local_out, str(out_dir))
    finally:
        if remote_out:
            shutil.rmtree(local_out, ignore_errors=True)
    return results


def score_answers(name: str, answers_file: str | Path, annotations: str | Path, out_dir: str | Path | None = None,
                  questions: str | Path | None = None, judge=None) -> dict:
    """Score an answers file (LLaVA's, or vlmsweep's own) against a benchmark's official answer key,
    without a model; with `out_dir`, write what a generated run writes."""
    bench = get_benchmark(name)
    answers = read_answers(answers_file)
    annotations = Path(annotations)
    key = bench.load_key(annotations, Path(questions) if questions else None)
    if out_dir is None:
        return _score(bench, answers, key, judge)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = annotations if annotations.is_dir() else annotations.parent
    scored = _finish(bench, answers, key, folder, out_dir, judge, answers_file=str(answers_file))
    _write(out_dir, scored)
    return scored


def flat_metrics(results: dict[str, dict]) -> dict[str, float]:
    """{"<bench>/<metric>": value} over every numeric metric, {"<bench>/<metric>_stderr": its
    standard error} beside each that has one, and for the benchmark's headline metric (the one
    tables show) its chance level and that level's p-value as "<bench>/<metric>_chance" and
    "<bench>/<metric>_chance_p" (the names MLflow gets as eval/...)."""
    out = {}
    for bench, r in results.items():
        errors, chance, p = r.get("stderr") or {}, r.get("chance") or {}, r.get("chance_p") or {}
        head = set(get_benchmark(bench).metrics[:1]) if bench in BENCHMARKS else set()
        for k, v in (r.get("metrics") or {}).items():
            if isinstance(v, (int, float)):
                out[f"{bench}/{k}"] = float(v)
                if isinstance(errors.get(k), (int, float)):
                    out[f"{bench}/{k}_stderr"] = float(errors[k])
                if k in head and isinstance(chance.get(k), (int, float)):
                    out[f"{bench}/{k}_chance"] = float(chance[k])
                    out[f"{bench}/{k}_chance_p"] = float(p[k])
    return out


def _with_stderr(value: float, stderr) -> str:
    return f"{value:>8.2f} ± {stderr:<6.2f}" if isinstance(stderr, (int, float)) else f"{value:>8.2f}" + " " * 9


def _chance(r: dict, metric: str) -> tuple[str, str]:
    """(chance column, its verdict) for one metric of a result: "" where no chance was computed."""
    level, p = (r.get("chance") or {}).get(metric), (r.get("chance_p") or {}).get(metric)
    if not isinstance(level, (int, float)):
        return "", ""
    return f"{level:.2f}", f"{'above' if above_chance(p) else 'not above'} chance (p = {p:.2f})"


def format_table(results: dict[str, dict]) -> str:
    """Each benchmark's headline metrics as score ± standard error, with its chance level (the
    model's own answers shuffled among questions of one type) and whether the score is above it."""
    lines = [f"{'benchmark':<11} {'metric':<13} {'score':>8} {'± stderr':<8} {'chance':>7} {'items':>6}  notes"]
    for name, r in results.items():
        metrics = r.get("metrics") or {}
        head = get_benchmark(name).metrics
        shown = [m for m in head if m in metrics] or list(metrics)[:1]
        counts = r.get("counts") or {}
        n = counts.get("items", counts.get("answered", 0))
        notes = "; ".join(r.get("notes") or []) if r.get("skipped") else ""
        if not shown:
            lines.append(f"{name:<11} {'-':<13} {'-':>8} {'':<8} {'':>7} {n:>6}  {notes or 'not scored'}")
        for k, metric in enumerate(shown):
            score = _with_stderr(metrics[metric], (r.get("stderr") or {}).get(metric))
            level, verdict = _chance(r, metric) if k == 0 else ("", "")
            note = "; ".join(x for x in (verdict, notes if k == 0 else "") if x)
            lines.append(f"{name if k == 0 else '':<11} {metric:<13} {score} {level:>7} "
                         f"{n if k == 0 else '':>6}  {note}")
    return "\n".join(lines)
