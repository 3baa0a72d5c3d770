"""`vlmsweep` command line: run a variant, check a config, generate data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from vlmsweep.argtypes import non_negative_int, positive_int
from vlmsweep.cli_cluster import add_cluster_commands
from vlmsweep.cli_eval import add_eval_commands
from vlmsweep.config.errors import ConfigError, InputError
from vlmsweep.data.images import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS
from vlmsweep.export.cli import add_export_parser
from vlmsweep.serve.chat import add_chat_parser
from vlmsweep.serve.demo import add_demo_parser

RUN_HELP = """Train one variant: every stage of its recipe (e.g. pretrain, then finetune), each a
Ray Train job whose workers run DeepSpeed, tracked in MLflow. Finished stages (same
config, same data, same inputs) are found in the work dir and reused."""


SWEEP_HELP = """Run an ablation grid: every variant's stages planned, shared stages run once,
on Ray Tune (one trial per stage, each a Ray Train job), tracked in MLflow as one parent
run with a child per variant. --resume continues after an interrupted driver."""


def _load(args):
    """The variant file with --set changes, and where each field was written."""
    from vlmsweep.config.load import load_located, parse_sets

    return load_located(args.config, parse_sets(args.set))


def grid_of(args):
    """The grid (or variant) file with --set changes on every variant and --variant picked."""
    from vlmsweep.config.grid import load_any, select, with_sets
    from vlmsweep.config.load import parse_sets

    sets = parse_sets(args.set)  # before the file: a malformed --set is reported as such
    grid = load_any(args.config)
    if sets:
        grid = with_sets(grid, sets)
    return select(grid, args.variant) if getattr(args, "variant", None) else grid


def _local_cluster(args) -> bool:
    """Whether the sweep would start Ray on this machine (no --address, not inside a Ray Job)."""
    import os

    target = getattr(args, "address", None) or os.environ.get("RAY_ADDRESS")
    return not target or target == "local"


def check_output_dir(path: str | None, flag: str) -> None:
    """An output directory that is a file would fail deep inside a writer: name the flag."""
    if path and Path(path).exists() and not Path(path).is_dir():
        raise InputError([(flag, f"{path} is a file, not a directory")])


def cmd_run(args) -> int:
    from vlmsweep import preflight
    from vlmsweep.config.workdir import WorkDir

    work = WorkDir.at(args.work_dir)
    grid = grid_of(args)
    # everything a stage would fail on, before Ray (or even Ray's import): the variants, this
    # machine, the tracking store
    preflight.check(grid, work, local_cluster=_local_cluster(args))
    work.check_tracking_store()
    from vlmsweep.sweep.runner import run_sweep

    result = run_sweep(grid, work, address=args.address, max_concurrent=getattr(args, "max_concurrent", None),
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
    from vlmsweep import preflight
    from vlmsweep.config.workdir import WorkDir

    if args.dry_run:
        from vlmsweep.sweep.plan import describe, make_plan

        work = WorkDir.at(args.work_dir)
        grid = grid_of(args)
        notes = preflight.check(grid, work, offline_ok=True)
        print(describe(make_plan(grid, work, dry_run=True)))
        for note in notes:
            print(f"note: {note}")
        return 0
    return cmd_run(args)


def cmd_report(args) -> int:
    from vlmsweep import storage
    from vlmsweep.config.schema import name_problem
    from vlmsweep.config.workdir import WorkDir
    from vlmsweep.report import build_report
    from vlmsweep.report.collect import SweepNotFound

    if name_problem(args.sweep):  # it names a directory of the work dir: no ../ out of it
        raise InputError([("SWEEP", f"the sweep name {name_problem(args.sweep)}")])
    work = WorkDir.at(args.work_dir)
    check_output_dir(args.out, "--out")
    work.check_tracking_store(reading_sweep=args.sweep)
    out = args.out or work.path("reports", args.sweep)
    try:
        if storage.is_remote(out):  # written on this machine, then uploaded to the work dir
            import tempfile

            with tempfile.TemporaryDirectory() as local:
                built = build_report(work.tracking_uri, args.sweep, local, work_dir=work.uri)
                storage.upload_dir(local, out)
            paths = {**built, "markdown": storage.join(out, "report.md"), "html": storage.join(out, "report.html")}
        else:
            paths = build_report(work.tracking_uri, args.sweep, out, work_dir=work.uri)
    except SweepNotFound as err:  # an expected failure: one line, exit 2
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {paths['markdown']}\n        {paths['html']}")
    if paths.get("view"):  # the variants side by side in MLflow's UI (report/browse.py)
        print(f"browse: {paths['view'].url}" + (f"\n        (start the UI first: {paths['view'].serve})"
                                                 if paths["view"].serve else ""))
    return 0


def cmd_check(args) -> int:
    from vlmsweep import preflight
    from vlmsweep.config.grid import Grid, Variant
    from vlmsweep.config.load import dump_resolved
    from vlmsweep.config.workdir import WorkDir

    cfg, where = _load(args)
    if preflight.uses_hub(cfg):
        _offline_if_no_hub()
    preflight.check(Grid(cfg.name, args.config, {}, [Variant(cfg.name, {}, cfg, where)]), WorkDir.at(args.work_dir))
    print(dump_resolved(cfg) if args.show else f"{args.config}: ok ({len(cfg.recipe.stages)} stages)")
    return 0


def cmd_data_world(args) -> int:
    from vlmsweep.data.world import build_world
    from vlmsweep.eval.world_sets import BENCH_DIR, build_benchmarks

    check_output_dir(args.out, "--out")
    mix = _mix_flag(args.mix)
    summary = build_world(args.out, seed=args.seed, size=args.size, image_size=args.image_size, mix=mix)
    # the held-out benchmark sets, in the official layouts, beside the training splits
    build_benchmarks(Path(args.out) / BENCH_DIR, seed=args.seed, size=args.size, image_size=args.image_size)
    print(yaml.safe_dump({k: v for k, v in summary.items() if k in ("seed", "size", "image_size", "mix", "splits")},
                         sort_keys=False))
    return 0


def _mix_flag(text: str | None) -> dict | None:
    """--mix '{yes_no: 1, vqa: 1}' as the mapping data.synthetic.mix takes (build_world checks it)."""
    if text is None:
        return None
    from vlmsweep.config.load import parse_yaml

    try:
        mix, _ = parse_yaml(text, "--mix")
    except ConfigError as err:
        raise ConfigError([("--mix", f"not YAML: {msg.splitlines()[0]}") for _, msg in err.problems]) from None
    if not isinstance(mix, dict):
        raise ConfigError([("--mix", f"must map kinds to weights, e.g. '{{yes_no: 1}}', got {text!r}")])
    return mix


def cmd_data_ingest(args) -> int:
    from vlmsweep.data.ingest import IngestError, ingest_llava

    try:
        m = ingest_llava(args.file, args.images, args.out, source=args.source, progress=not args.no_progress,
                         max_image_bytes=args.max_image_bytes, max_image_pixels=args.max_image_pixels)
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
    print(f"limits:       {m['limits']['max_image_bytes']} bytes, {m['limits']['max_image_pixels']} pixels per image")
    return 0


def cmd_zoo_build(args) -> int:
    from vlmsweep.config.workdir import WorkDir
    from vlmsweep.zoo import build_zoo

    work = WorkDir.at(args.work_dir)
    # built on this machine (the zoo trains on a local Ray); a remote work dir gets a copy of each artifact
    built = build_zoo(work.local_root, size=args.size, only=args.only)
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
    print("use them as checkpoints: " + ", ".join(f"zoo:{name}" for name in built if name != "tokenizer"))
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
    sweep.add_argument("--max-concurrent", type=positive_int, help="at most this many stages at once")
    sweep.add_argument("--resume", action="store_true", help="continue the latest sweep of this name (same MLflow runs)")
    sweep.add_argument("--retries", type=non_negative_int, default=1, help="retries of a failed stage (default 1)")
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

    add_eval_commands(sub, positive_int)

    zoo = sub.add_parser("zoo", help="the pretrained tiny zoo").add_subparsers(dest="zoo_command", required=True)
    zb = zoo.add_parser("build", help="pretrain the tiny tokenizer, LMs and vision encoders on the world (cached)")
    zb.add_argument("--work-dir", help="work dir (default ./.vlmsweep); the zoo goes in WORK_DIR/zoo")
    zb.add_argument("--size", default="small",
                    help="small (default: what experiments/mini uses, ~12 min cold on 2 cores) | tiny (~2 min; the demo and tests)")
    zb.add_argument("--only", type=lambda text: [p.strip() for p in text.split(",") if p.strip()], metavar="A,B",
                    help="build only these parts, e.g. tinyllama,siglip (and the tokenizer they need)")
    zb.set_defaults(fn=cmd_zoo_build)

    data = sub.add_parser("data", help="data tools").add_subparsers(dest="data_command", required=True)
    world = data.add_parser("world", help="generate the synthetic visual world as shards")
    world.add_argument("--out", required=True, help="output directory")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--size", default="tiny", help="tiny | small | medium")
    world.add_argument("--image-size", type=int, default=64, help="pixels per side")
    world.add_argument("--mix", help="the instruct split's kinds and weights, e.g. '{yes_no: 1, vqa: 1}' "
                       "(data.synthetic.mix; default: LLaVA-665K's spread)")
    world.set_defaults(fn=cmd_data_world)
    ingest = data.add_parser("ingest", help="convert LLaVA-format JSON/JSONL + an image folder to shards",
                             description="Samples that can't be used are skipped, counted by kind and "
                             "listed in OUT/skipped.json; exit code 2 only if the file itself is malformed. "
                             "Image paths must stay inside --images (symlinks resolved): one that leaves it "
                             "is skipped as image_outside_root and never opened.")
    ingest.add_argument("file", help="LLaVA conversations: a JSON list or JSONL")
    ingest.add_argument("--images", required=True, help="image folder the 'image' paths are relative to")
    ingest.add_argument("--out", required=True, help="output shard directory")
    ingest.add_argument("--source", help="source name for every sample (default: the record's "
                        "'source', else llava/<file stem>)")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.add_argument("--max-image-bytes", type=int, default=DEFAULT_MAX_IMAGE_BYTES,
                        help="skip image files larger than this, unread (default %(default)s: 64 MiB)")
    ingest.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                        help="skip images with more pixels than this, from their header, undecoded "
                        "(default %(default)s, PIL's own bomb threshold)")
    ingest.set_defaults(fn=cmd_data_ingest)

    add_cluster_commands(sub, positive_int, non_negative_int)
    add_export_parser(sub)
    add_demo_parser(sub)
    add_chat_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from vlmsweep.sweep.ray_cluster import configure_driver_logs

    configure_driver_logs(embedded=_local_cluster(args))
    try:
        return args.fn(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
