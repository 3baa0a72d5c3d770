"""`vlmsweep eval`: generate and score on benchmarks (a stage output on the world's sets or on
official layouts such as LLaVA's playground/data/eval), or score an answers file alone."""

from __future__ import annotations

from pathlib import Path

from vlmsweep.config.errors import ConfigError, InputError


def check_output_dir(path, flag):
    from vlmsweep.cli import check_output_dir as check   # the CLI's one rule for output folders

    check(path, flag)


def cmd_eval(args) -> int:
    from vlmsweep import storage
    from vlmsweep.config.workdir import WorkDir
    from vlmsweep.eval.generate import available_device
    from vlmsweep.eval.run import WORLD_BENCHMARKS, check_benches, evaluate, format_table
    from vlmsweep.train.stage_output import is_complete, read_config

    if args.checkpoint == "score":
        return _score_answers(args)
    check_output_dir(args.out, "--out")
    benches = args.bench.split(",") if args.bench else list(WORLD_BENCHMARKS)
    check_benches(benches)
    if not is_complete(args.checkpoint):
        raise InputError([("CHECKPOINT", f"{args.checkpoint} is not a finished stage output (no manifest.json there; "
                                         "give a stage directory, e.g. WORK_DIR/stages/finetune-...)")])
    available_device(args.device)   # before the benchmark files are read
    work = WorkDir.at(args.work_dir)
    data = args.data or _world_bench_dir(args.checkpoint, work)
    check_benches(benches, data)
    out = args.out or storage.join(storage.normalize(args.checkpoint), "eval")
    judge = _judge(args, read_config(args.checkpoint).eval.judge)
    results = evaluate(args.checkpoint, benches, data, out, work.model_root(), batch_size=args.batch_size,
                       max_new_tokens=args.max_new_tokens, judge=judge, device=args.device, dtype=args.dtype)
    print(format_table(results))
    files = sorted({f for r in results.values() for f in r.get("files", [])})
    print(f"results: {out}/<benchmark>.json; also {', '.join(files)}")
    return 0


def _judge(args, configured=None):
    """MM-Vet's judge: --judge-url/--judge-model, else the config's eval.judge, else none."""
    from vlmsweep.config.schema import JudgeConfig
    from vlmsweep.eval.run import make_judge

    if args.judge_url:
        fields = {"base_url": args.judge_url, "model": args.judge_model, "api_key_env": args.judge_key_env}
        return make_judge(JudgeConfig(**{k: v for k, v in fields.items() if v}))
    if args.judge_model or args.judge_key_env:
        raise InputError([("--judge-model", "needs --judge-url (the judge's OpenAI-compatible endpoint)")])
    return make_judge(configured)


def _world_bench_dir(checkpoint: str, work) -> str:
    """The synthetic world's benchmark sets for the data the checkpoint was trained on."""
    from vlmsweep.eval.world_sets import ensure_world_benchmarks
    from vlmsweep.train.stage_output import read_config

    cfg = read_config(checkpoint)
    if cfg.data.source != "synthetic":
        raise ConfigError([("--data", "the checkpoint was not trained on the synthetic world: "
                                      "give the benchmark directory with --data")])
    return ensure_world_benchmarks(cfg.data, work)


def _score_answers(args) -> int:
    """Score an answers file (LLaVA's JSONL, or vlmsweep's own) without a model."""
    import json

    from vlmsweep.eval.benchmarks.files import BenchmarkFileError
    from vlmsweep.eval.run import check_benches, score_answers

    if not (args.bench and args.answers and args.annotations) or "," in args.bench:
        raise InputError([("eval score", "needs --bench NAME (one), --answers FILE and --annotations FILE "
                                         "(the official answer file, or the benchmark's folder)")])
    check_benches([args.bench])
    answers, annotations = Path(args.answers), Path(args.annotations)
    if not answers.is_file():
        raise InputError([("--answers", f"{answers} is a directory, not a file" if answers.is_dir()
                           else f"no such file: {answers}")])
    if not annotations.exists():
        raise InputError([("--annotations", f"no such file or directory: {annotations}")])
    if args.questions and not Path(args.questions).is_file():
        raise InputError([("--questions", f"no such file: {args.questions}")])
    if args.out:
        check_output_dir(args.out, "--out")
    try:
        result = score_answers(args.bench, answers, annotations, out_dir=args.out, questions=args.questions,
                               judge=_judge(args))
    except BenchmarkFileError as err:
        field = "--answers" if str(answers) in str(err) else "--annotations"
        raise InputError([(field, str(err))]) from None
    print(json.dumps({"benchmark": args.bench, "metrics": result.get("metrics"), "stderr": result.get("stderr"),
                      "counts": result.get("counts"),
                      "notes": result.get("notes", []), "files": result.get("files", [])}, indent=1))
    return 0


def add_eval_commands(sub, positive) -> None:
    """The eval subcommand (and its score mode); `positive` is the CLI's int type."""
    ev = sub.add_parser("eval", help="evaluate a checkpoint on benchmarks, or score an answers file",
                        description="vlmsweep eval CHECKPOINT [--bench vqav2,gqa,...] [--data DIR]: generate and "
                                    "score (CHECKPOINT = a stage output dir, e.g. the finetune stage); DIR holds "
                                    "one folder per benchmark in its official layout, as LLaVA's "
                                    "playground/data/eval. vlmsweep eval score --bench NAME --answers FILE "
                                    "--annotations PATH: score an answers file (LLaVA's JSONL, or vlmsweep's "
                                    "results JSON) without a model, as the benchmark's official script does.")
    ev.add_argument("checkpoint", help="stage output directory, or the word 'score'")
    ev.add_argument("--bench", help="comma-separated benchmarks (default: the seven the world builds)")
    ev.add_argument("--data", help="directory holding one folder per benchmark, e.g. LLaVA's playground/data/eval "
                                   "(default: the world's benchmark sets)")
    ev.add_argument("--batch-size", type=positive, default=16)
    ev.add_argument("--max-new-tokens", type=positive, default=32)
    ev.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where to generate (default: cuda if there is one)")
    ev.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                    help="weights' precision (default: bfloat16 on a GPU that has it, float32 on CPU)")
    ev.add_argument("--out", help="where results go (default: CHECKPOINT/eval; score mode: print only)")
    ev.add_argument("--work-dir", help="work dir holding the presets (default ./.vlmsweep)")
    ev.add_argument("--answers", help="score mode: the answers file")
    ev.add_argument("--annotations", help="score mode: the benchmark's official answer file, or its folder")
    ev.add_argument("--questions", help="score mode: the question file, where the key needs it "
                                        "(POPE: llava_pope_test.jsonl, when not beside coco/)")
    ev.add_argument("--judge-url", help="MM-Vet's judge: an OpenAI-compatible endpoint (default: eval.judge)")
    ev.add_argument("--judge-model", help="the judge's model (default gpt-4-0613, as MM-Vet's published numbers)")
    ev.add_argument("--judge-key-env", help="environment variable holding the judge's API key "
                                            "(default OPENAI_API_KEY)")
    ev.set_defaults(fn=cmd_eval)
