"""`vlmsweep` command line: run a variant, check a config, generate data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from vlmsweep.config.errors import ConfigError

RUN_HELP = """Train one variant: every stage of its recipe (e.g. pretrain, then finetune), each a
Ray Train job whose workers run DeepSpeed, tracked in MLflow. Finished stages (same
config, same data, same inputs) are found in the work dir and reused."""


SWEEP_HELP = """Run an ablation grid: every variant's stages planned, shared stages run once,
on Ray Tune (one trial per stage, each a Ray Train job), tracked in MLflow as one parent
run with a child per variant. --resume continues after an interrupted driver."""


def _changes(pairs: list[str]) -> dict:
    """--set a.b.c=value pairs → a nested dict (values parsed as YAML: 3, 1e-3, true, [a, b])."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError([("--set", f"{pair!r} is not KEY=VALUE (e.g. training.steps=20)")])
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def _load(args):
    from vlmsweep.config.load import load_variant

    return load_variant(args.config, _changes(args.set))


def _grid(args):
    from vlmsweep.config.grid import load_any, select

    grid = load_any(args.config)
    if args.set:  # --set applies to every variant of the grid
        from vlmsweep.config.grid import Grid, Variant
        from vlmsweep.config.load import deep_merge, resolve

        changes = _changes(args.set)
        grid = Grid(grid.name, grid.source, grid.axes, [
            Variant(v.name, v.axes, resolve(deep_merge(_raw(v.config), changes), source=grid.source)) for v in grid.variants])
    return select(grid, args.variant) if getattr(args, "variant", None) else grid


def _raw(cfg) -> dict:
    """A resolved config back to a raw mapping that resolve() accepts (recipe spelled out)."""
    return cfg.model_dump(mode="json")


def cmd_run(args) -> int:
    from vlmsweep.config.workdir import WorkDir
    from vlmsweep.sweep.runner import run_sweep

    work = WorkDir.at(args.work_dir)
    result = run_sweep(_grid(args), work, address=args.address, max_concurrent=getattr(args, "max_concurrent", None),
                       resume=getattr(args, "resume", False), retries=getattr(args, "retries", 1))
    uri = work.tracking_uri
    print(f"browse: {uri}" if uri.startswith(("http://", "https://")) else f"browse: mlflow ui --backend-store-uri {uri}")
    return 0 if all(s == "FINISHED" for s in result.variants.values()) else 1


def _offline_if_no_hub() -> None:
    """No route to the Hugging Face Hub: switch transformers to its offline mode before it is
    imported, so config lookups fail at once instead of retrying with back-off per model."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE"):
        return
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        os.environ["HF_HUB_OFFLINE"] = "1"
        print("note: the Hugging Face Hub is unreachable; checking models from local files only")


def cmd_sweep(args) -> int:
    if args.dry_run:
        _offline_if_no_hub()
    from vlmsweep.config.workdir import WorkDir
    from vlmsweep.sweep.plan import describe, make_plan
    from vlmsweep.sweep.runner import check_grid

    if args.dry_run:
        work = WorkDir.at(args.work_dir)
        grid = _grid(args)
        notes = check_grid(grid, work, offline_ok=True)
        print(describe(make_plan(grid, work, dry_run=True)))
        for note in notes:
            print(f"note: {note}")
        return 0
    return cmd_run(args)


def cmd_report(args) -> int:
    from vlmsweep import storage
    from vlmsweep.config.workdir import WorkDir
    from vlmsweep.report import build_report
    from vlmsweep.report.collect import SweepNotFound

    work = WorkDir.at(args.work_dir)
    out = args.out or work.path("reports", args.sweep)
    try:
        if storage.is_remote(out):  # written on this machine, then uploaded to the work dir
            import tempfile

            with tempfile.TemporaryDirectory() as local:
                build_report(work.tracking_uri, args.sweep, local, work_dir=work.uri)
                storage.upload_dir(local, out)
            paths = {"markdown": storage.join(out, "report.md"), "html": storage.join(out, "report.html")}
        else:
            paths = build_report(work.tracking_uri, args.sweep, out, work_dir=work.uri)
    except SweepNotFound as err:  # an expected failure: one line, exit 2
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {paths['markdown']}\n        {paths['html']}")
    return 0


def cmd_check(args) -> int:
    from vlmsweep.config.load import dump_resolved
    from vlmsweep.config.workdir import WorkDir
    from vlmsweep.models.check import check_variant

    cfg = _load(args)
    check_variant(cfg, WorkDir.at(args.work_dir).model_root())
    print(dump_resolved(cfg) if args.show else f"{args.config}: ok ({len(cfg.recipe.stages)} stages)")
    return 0


def cmd_data_world(args) -> int:
    from vlmsweep.data.world import build_world

    summary = build_world(args.out, seed=args.seed, size=args.size, image_size=args.image_size)
    print(yaml.safe_dump({k: v for k, v in summary.items() if k in ("seed", "size", "image_size", "splits")},
                         sort_keys=False))
    return 0


def cmd_data_ingest(args) -> int:
    from vlmsweep.data.ingest import IngestError, ingest_llava

    try:
        m = ingest_llava(args.file, args.images, args.out, source=args.source,
                         progress=not args.no_progress)
    except IngestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n_skipped = sum(m["skipped"].values())
    print(f"ingested {m['ingested']} sample(s) from {args.file}, skipped {n_skipped}")
    for kind, n in m["skipped"].items():
        ids = m["skipped_ids"][kind]
        more = f", ... (+{len(ids) - 5})" if len(ids) > 5 else ""
        print(f"  {kind:<21} {n:>6}  e.g. {', '.join(ids[:5])}{more}")
    print(f"out:          {args.out}  ({m['rows']} rows in {len(m['shards'])} shard(s); "
          f"details in skipped.json)")
    print(f"content hash: {m['content_hash']}")
    return 0


def cmd_eval(args) -> int:
    from vlmsweep import storage
    from vlmsweep.config.workdir import WorkDir
    from vlmsweep.eval.run import WORLD_BENCHMARKS, evaluate, format_table

    if args.checkpoint == "score":
        return _score_answers(args)
    work = WorkDir.at(args.work_dir)
    benches = args.bench.split(",") if args.bench else list(WORLD_BENCHMARKS)
    data = args.data or _world_bench_dir(args.checkpoint, work)
    out = args.out or storage.join(storage.normalize(args.checkpoint), "eval")
    results = evaluate(args.checkpoint, benches, data, out, work.model_root(), batch_size=args.batch_size,
                       max_new_tokens=args.max_new_tokens)
    print(format_table(results))
    print(f"results: {out}/<benchmark>.json")
    return 0


def _world_bench_dir(checkpoint: str, work) -> str:
    """The synthetic world's benchmark sets for the data the checkpoint was trained on."""
    from vlmsweep import storage
    from vlmsweep.data.prepare import ensure_splits, world_dir
    from vlmsweep.train.stage_output import read_config

    cfg = read_config(checkpoint)
    if cfg.data.source != "synthetic":
        raise ConfigError([("--data", "the checkpoint was not trained on the synthetic world: "
                                      "give the benchmark directory with --data")])
    ensure_splits(cfg.data, work)
    return storage.join(world_dir(cfg.data, work), "bench")


def _score_answers(args) -> int:
    """Score an existing LLaVA answers JSONL (question_id, text) without a model."""
    import json

    from vlmsweep.eval.benchmarks import get_benchmark

    if not (args.bench and args.answers and args.annotations) or "," in args.bench:
        raise ConfigError([("eval score", "needs --bench NAME (one), --answers FILE and --annotations FILE")])
    bench = get_benchmark(args.bench)
    predictions = {}
    for n, line in enumerate(Path(args.answers).read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                predictions[row["question_id"]] = row["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ConfigError([("--answers", f"{args.answers}:{n}: not a LLaVA answer line "
                                                 f"(question_id, text): {err}")]) from None
    result = bench.score(predictions, bench.load_annotations(Path(args.annotations)))
    print(json.dumps({"benchmark": args.bench, "metrics": result.get("metrics"), "counts": result.get("counts"),
                      "notes": result.get("notes", [])}, indent=1))
    return 0


def cmd_zoo_build(args) -> int:
    from vlmsweep.config.workdir import WorkDir
    from vlmsweep.zoo import build_zoo

    work = WorkDir.at(args.work_dir)
    # built on this machine (the zoo trains on a local Ray); a remote work dir gets a copy of each artifact
    built = build_zoo(work.local_root, size=args.size)
    if work.is_remote:
        from vlmsweep import storage

        for name, info in built.items():
            storage.upload_dir(info["path"], storage.join(work.zoo, name), last="zoo.json")
            info["path"] = storage.join(work.zoo, name)
    print(f"{'name':<10} {'params':>10} {'final loss':>11}  path")
    for name, info in built.items():
        loss = info.get("final_loss")
        print(f"{name:<10} {info.get('params') or '-':>10} {f'{loss:.3f}' if loss is not None else '-':>11}  "
              f"{info['path']}{'  (cached)' if info.get('cached') else ''}")
    print("use them as checkpoints: zoo:tinyllama, zoo:stablelm, zoo:phi, zoo:clip, zoo:siglip")
    return 0


SUBMIT_HELP = """Submit a grid's sweep to a Ray cluster as a Ray Job (the Jobs API at the cluster's
dashboard, http://HEAD:8265). vlmsweep itself (py_modules), the grid and the files it extends
(working_dir), and what the workers need (MLFLOW_TRACKING_URI, AWS_*, VLMSWEEP_*, quiet
progress) travel in the job's runtime_env. The work dir must be a URI every node reaches
(s3://, gs://) or an absolute path on a shared mount; MLFLOW_TRACKING_URI must be an http(s)://
tracking server. One sweep (grid name + work dir) runs as one job at a time: while an attempt is
pending or running, submit says so and submits nothing; after it ended (driver died, stopped,
failed), submit starts the next attempt with --resume. Token auth: RAY_AUTH_MODE=token and the
cluster's token in RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token."""

JOBS_HELP = """The cluster's Ray Jobs: list (vlmsweep's; --all for every job), status ID, logs ID
[--follow], stop ID. --address is the dashboard (http://HEAD:8265), else $VLMSWEEP_JOBS_ADDRESS,
else $RAY_API_SERVER_ADDRESS. Token auth as for submit."""


def cmd_submit(args) -> int:
    from vlmsweep.sweep.submit import submit_sweep

    grid = _grid(args)           # the grid, --set and --variant checked here, before anything is sent
    sub = submit_sweep(args.config, grid.name, address=args.address, work_dir=args.work_dir, sets=args.set,
                       variant=args.variant, max_concurrent=args.max_concurrent, retries=args.retries)
    logs = f"vlmsweep jobs logs {sub.submission_id} --follow --address {sub.url}"
    if sub.already_running:
        print(f"already running: {sub.submission_id} ({sub.status}) is sweep {grid.name!r} on this work dir; "
              f"nothing submitted\n  logs: {logs}")
        return 0
    print(f"submitted {sub.submission_id} to {sub.url}: sweep {grid.name!r}, attempt {sub.attempt}"
          f"{' (resuming)' if sub.attempt > 1 else ''}\n  logs: {logs}\n"
          f"  status: vlmsweep jobs status {sub.submission_id} --address {sub.url}")
    if args.follow:
        from vlmsweep.sweep.submit import jobs_client, print_logs

        print_logs(jobs_client(args.address), sub.submission_id, sub.url, follow=True)
    return 0


def cmd_jobs(args) -> int:
    from vlmsweep.sweep.submit import (jobs_address, jobs_client, job_info, list_table, print_logs, status_text,
                                       stop_job)

    client = jobs_client(args.address)
    url = jobs_address(args.address)
    if args.jobs_command == "list":
        print(list_table(client, url, every=args.all))
    elif args.jobs_command == "status":
        print(status_text(job_info(client, args.job_id, url)))
    elif args.jobs_command == "logs":
        print_logs(client, args.job_id, url, follow=args.follow)
    elif args.jobs_command == "stop":
        print(f"{args.job_id}: {stop_job(client, args.job_id, url)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlmsweep", description="Ablation grids of small LLaVA-style "
                                "vision-language models on Ray (Tune, Train + DeepSpeed, Data) with MLflow.")
    sub = p.add_subparsers(dest="command", required=True)

    def config_args(sp):
        sp.add_argument("config", help="variant YAML (e.g. experiments/smoke/variant.yaml)")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change one field, e.g. --set training.steps=20 (repeatable)")
        sp.add_argument("--work-dir", help="where everything is written (default ./.vlmsweep, or $VLMSWEEP_WORK_DIR)")

    run = sub.add_parser("run", help="train one variant end to end", description=RUN_HELP)
    config_args(run)
    run.add_argument("--variant", help="run only this variant of a grid file (by its name)")
    run.add_argument("--address", help="Ray cluster address, e.g. ray://head:10001 or auto (default: a local one)")
    run.set_defaults(fn=cmd_run)

    sweep = sub.add_parser("sweep", help="run an ablation grid", description=SWEEP_HELP)
    config_args(sweep)
    sweep.add_argument("--variant", help="run only this variant (by its name)")
    sweep.add_argument("--dry-run", action="store_true", help="print the plan: stages, sharing, reuse; run nothing")
    sweep.add_argument("--address", help="Ray cluster address, e.g. ray://head:10001 or auto (default: a local one)")
    sweep.add_argument("--max-concurrent", type=int, help="at most this many stages at once")
    sweep.add_argument("--resume", action="store_true", help="continue the latest sweep of this name (same MLflow runs)")
    sweep.add_argument("--retries", type=int, default=1, help="retries of a failed stage (default 1)")
    sweep.set_defaults(fn=cmd_sweep)

    report = sub.add_parser("report", help="Markdown + HTML ablation report of a sweep, from MLflow")
    report.add_argument("sweep", help="sweep name or run id")
    report.add_argument("--out", help="output directory (default: WORK_DIR/reports/SWEEP)")
    report.add_argument("--work-dir", help="work dir whose MLflow DB to read (default ./.vlmsweep)")
    report.set_defaults(fn=cmd_report)

    check = sub.add_parser("check", help="validate a config without running it")
    config_args(check)
    check.add_argument("--show", action="store_true", help="print the resolved config (all defaults filled in)")
    check.set_defaults(fn=cmd_check)

    ev = sub.add_parser("eval", help="evaluate a checkpoint on benchmarks, or re-score an answers file",
                        description="vlmsweep eval CHECKPOINT [--bench vqav2,gqa,...] [--data DIR]: generate and "
                                    "score (CHECKPOINT = a stage output dir, e.g. the finetune stage). "
                                    "vlmsweep eval score --bench NAME --answers FILE --annotations FILE: score "
                                    "LLaVA-format answers (JSONL of question_id, text) without a model.")
    ev.add_argument("checkpoint", help="stage output directory, or the word 'score'")
    ev.add_argument("--bench", help="comma-separated benchmarks (default: the seven offline ones)")
    ev.add_argument("--data", help="directory holding one folder per benchmark (default: the world's bench sets)")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--max-new-tokens", type=int, default=32)
    ev.add_argument("--out", help="where results JSONs go (default: CHECKPOINT/eval)")
    ev.add_argument("--work-dir", help="work dir holding the presets (default ./.vlmsweep)")
    ev.add_argument("--answers", help="score mode: LLaVA answers JSONL")
    ev.add_argument("--annotations", help="score mode: the benchmark's annotation file or directory")
    ev.set_defaults(fn=cmd_eval)

    zoo = sub.add_parser("zoo", help="the pretrained tiny zoo").add_subparsers(dest="zoo_command", required=True)
    zb = zoo.add_parser("build", help="pretrain the tiny tokenizer, LMs and vision encoders on the world (cached)")
    zb.add_argument("--work-dir", help="work dir (default ./.vlmsweep); the zoo goes in WORK_DIR/zoo")
    zb.add_argument("--size", default="small",
                    help="small (default: what experiments/mini uses, ~12 min cold on 2 cores) | tiny (seconds; for tests)")
    zb.set_defaults(fn=cmd_zoo_build)

    data = sub.add_parser("data", help="data tools").add_subparsers(dest="data_command", required=True)
    world = data.add_parser("world", help="generate the synthetic visual world as shards")
    world.add_argument("--out", required=True, help="output directory")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--size", default="tiny", help="tiny | small | medium")
    world.add_argument("--image-size", type=int, default=64, help="pixels per side")
    world.set_defaults(fn=cmd_data_world)
    ingest = data.add_parser("ingest", help="convert LLaVA-format JSON/JSONL + an image folder to shards",
                             description="Samples that can't be used are skipped, counted by kind and "
                             "listed in OUT/skipped.json; exit code 2 only if the file itself is malformed.")
    ingest.add_argument("file", help="LLaVA conversations: a JSON list or JSONL")
    ingest.add_argument("--images", required=True, help="image folder the 'image' paths are relative to")
    ingest.add_argument("--out", required=True, help="output shard directory")
    ingest.add_argument("--source", help="source name for every sample (default: the record's "
                        "'source', else llava/<file stem>)")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.set_defaults(fn=cmd_data_ingest)

    submit = sub.add_parser("submit", help="submit a grid's sweep to a Ray cluster as a Ray Job",
                            description=SUBMIT_HELP)
    submit.add_argument("config", help="grid YAML (e.g. experiments/smoke.yaml), or a variant YAML")
    submit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change one field of every variant, e.g. --set training.steps=20 (repeatable)")
    submit.add_argument("--work-dir", help="where the sweep writes, reached by every node: s3://BUCKET/PREFIX, "
                        "gs://..., or an absolute path on a shared mount (default: $VLMSWEEP_WORK_DIR)")
    submit.add_argument("--address", help="the cluster's dashboard / Jobs API, e.g. http://HEAD:8265 "
                        "(default: $VLMSWEEP_JOBS_ADDRESS, else $RAY_API_SERVER_ADDRESS)")
    submit.add_argument("--variant", help="run only this variant (by its name)")
    submit.add_argument("--max-concurrent", type=int, help="at most this many stages at once")
    submit.add_argument("--retries", type=int, help="retries of a failed stage (default 1)")
    submit.add_argument("--follow", action="store_true", help="then print the job's log as it grows")
    submit.set_defaults(fn=cmd_submit)

    jobs = sub.add_parser("jobs", help="list, inspect, follow and stop the sweeps' Ray Jobs", description=JOBS_HELP)
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)

    def jobs_args(sp):
        sp.add_argument("--address", help="the cluster's dashboard, e.g. http://HEAD:8265 "
                        "(default: $VLMSWEEP_JOBS_ADDRESS, else $RAY_API_SERVER_ADDRESS)")
        sp.set_defaults(fn=cmd_jobs)
        return sp

    jobs_args(jobs_sub.add_parser("list", help="the cluster's vlmsweep jobs")).add_argument(
        "--all", action="store_true", help="every job on the cluster, not only vlmsweep's")
    jobs_args(jobs_sub.add_parser("status", help="a job's status")).add_argument("job_id", help="submission id")
    logs = jobs_args(jobs_sub.add_parser("logs", help="a job's driver log"))
    logs.add_argument("job_id", help="submission id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    jobs_args(jobs_sub.add_parser("stop", help="stop a job (its sweep resumes on the next submit)")).add_argument(
        "job_id", help="submission id")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
