"""`vlmsweep export CHECKPOINT --format hf-llava OUT` (wired into cli.py by add_export_parser)."""

from __future__ import annotations

EXPORT_HELP = """Export a trained variant for use outside vlmsweep. CHECKPOINT is a stage output
directory (WORK_DIR/stages/...) or SWEEP/VARIANT (the variant's last training stage, found in
the work dir's MLflow record). --format hf-llava writes a Hugging Face LlavaForConditionalGeneration
folder (config, safetensors, processor with the training chat template) that plain transformers
loads with AutoModelForImageTextToText and AutoProcessor; LoRA adapters are merged. Connectors:
linear, mlp1x_gelu, mlp2x_gelu, identity; others are refused, with the reason."""

FORMATS = ("hf-llava",)


def add_export_parser(subparsers):
    p = subparsers.add_parser("export", help="export a variant (Hugging Face Llava format)", description=EXPORT_HELP)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="stage output directory, or SWEEP/VARIANT")
    p.add_argument("out", metavar="OUT", help="folder to write (must not exist, or be empty)")
    p.add_argument("--format", required=True, choices=FORMATS, help="export format")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="weight dtype of the export (default float32: what the checkpoint holds)")
    p.add_argument("--work-dir", help="work dir holding the presets, zoo and MLflow record (default ./.vlmsweep)")
    p.set_defaults(fn=cmd_export)
    return p


def cmd_export(args) -> int:
    from vlmsweep import storage
    from vlmsweep.config.errors import InputError
    from vlmsweep.config.workdir import WorkDir

    from .hf_llava import export_hf_llava
    from .resolve import resolve_checkpoint

    if storage.is_remote(args.out):
        raise InputError([("OUT", f"{args.out}: the export is written to a local folder; upload it afterwards")])
    work = WorkDir.at(args.work_dir)
    stage_dir = resolve_checkpoint(args.checkpoint, work)
    done = export_hf_llava(stage_dir, args.out, work.model_root(), dtype=args.dtype)
    print(f"exported {stage_dir}\n      to {done['out']} (hf-llava: {done['vision']} + {done['connector']} + "
          f"{done['llm']}, template {done['template']}, {done['image_tokens']} image tokens, {done['dtype']})")
    print("load it: AutoModelForImageTextToText.from_pretrained(OUT), AutoProcessor.from_pretrained(OUT)")
    return 0
