"""`vlmsweep demo SWEEP`: a web page that asks several variants of a sweep the same question.

One image and one question go to every chosen variant; their answers appear side by side, each
under its variant's axes and headline scores (as the report shows them). The variants are read
from the work dir's MLflow record (report/collect.py), each one's model is its last training
stage (export/resolve.py), loaded once at start-up (eval/generate.py load_checkpoint), and each
answer is generated as evaluation generates one: `eval.generate.answer` on a one-item batch,
so the prompt is the same "<image>\\nQUESTION" user turn in the variant's chat template, the
image goes through the variant's processor, and decoding is greedy.

The page is Gradio; it binds to 127.0.0.1 unless --host says otherwise, and has no login.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from vlmsweep.argtypes import positive_int

DEMO_HELP = """Serve a web page that sends one image and one question to several variants of a
sweep and shows their answers side by side, with each variant's axes and headline scores.
SWEEP is a sweep name or run id in the work dir's MLflow record; every finished variant is
loaded (at start-up, once) unless --variants picks some. Answers are greedy, with the prompt
evaluation builds. The page binds to 127.0.0.1 by default and has no authentication: pass
--host 0.0.0.0 only on a network you trust."""

LOOPBACK = "127.0.0.1"
QUESTION_ID = "demo"


@dataclass
class Panel:
    """One variant on the page: what it is, how it scored, and its loaded model."""
    name: str
    axes: dict[str, str]
    scores: list[tuple[str, float | None]]   # (benchmark label, headline score), the report's columns
    status: str
    stage_dir: str = ""
    model: object = field(default=None, repr=False)   # eval.generate.LoadedModel

    def card(self) -> str:
        lines = [f"### {self.name}"]
        lines += [f"{axis}: **{label}**" for axis, label in self.axes.items()] or ["(no axes)"]
        if self.scores:
            lines.append(" · ".join(f"{label} {'–' if v is None else f'{v:.1f}'}" for label, v in self.scores))
        if self.status != "FINISHED":
            lines.append(f"*{self.status.lower()} run*")
        return "  \n".join(lines)


def _value(row, key: str) -> float | None:
    value = row.get(key)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value   # NaN: not measured


def sweep_panels(work, sweep: str, names: list[str] | None = None) -> tuple[str, list[Panel]]:
    """(the sweep's name, its panels): the variants named, in that order, else every finished one
    in the report's order. Unknown names or a sweep without any finished variant: InputError."""
    from vlmsweep.config.errors import InputError, did_you_mean
    from vlmsweep.report.collect import AXIS, SweepNotFound, load_sweep
    from vlmsweep.report.tables import benchmarks

    work.check_tracking_store(reading_sweep=sweep)
    try:
        data = load_sweep(work.tracking_uri, sweep, work_dir=work.uri)
    except SweepNotFound as err:
        raise InputError([("SWEEP", str(err))]) from None
    rows = {row["variant"]: row for row in data.variants.to_dict("records")}
    if names:
        unknown = [n for n in names if n not in rows]
        if unknown:
            raise InputError([("--variants", (f"sweep {data.sweep_name!r} has no variant {unknown[0]!r}"
                                              f"{did_you_mean(unknown[0], rows)}; its variants: {', '.join(rows)}"))])
        chosen = list(dict.fromkeys(names))
    else:
        chosen = [n for n, row in rows.items() if row["status"] == "FINISHED"]
        if not chosen:
            raise InputError([("SWEEP", (f"sweep {data.sweep_name!r} has no finished variant to load "
                                         f"(its variants: {', '.join(rows) or 'none'}); pick some with --variants"))])
    heads = benchmarks(data)
    panels = []
    for name in chosen:
        row = rows[name]
        axes = {a: str(row[AXIS + a]) for a in data.axes if isinstance(row.get(AXIS + a), str)}
        panels.append(Panel(name, axes, [(label, _value(row, key)) for label, key in heads], row["status"]))
    return data.sweep_name, panels


def load_models(work, sweep: str, panels: list[Panel], log=print) -> None:
    """Each panel's model: its variant's last training stage, loaded once."""
    from vlmsweep.eval.generate import load_checkpoint
    from vlmsweep.export.resolve import variant_stage_dir

    root = work.model_root()
    for panel in panels:
        panel.stage_dir = variant_stage_dir(work, sweep, panel.name)
        log(f"loading {panel.name}: {panel.stage_dir}")
        panel.model = load_checkpoint(panel.stage_dir, root)


def ask(panels: list[Panel], image, question: str, max_new_tokens: int = 64) -> list[str]:
    """Every panel's answer to QUESTION about IMAGE (a PIL image, or None for a text-only turn).
    A variant that fails answers with its error; the others still answer."""
    from vlmsweep.eval.generate import answer

    question = (question or "").strip()
    if not question:
        return ["(ask a question first)"] * len(panels)
    with tempfile.TemporaryDirectory(prefix="vlmsweep-demo-") as folder:
        images = []
        if image is not None:
            image.convert("RGB").save(Path(folder) / "image.png")
            images = ["image.png"]
        item = SimpleNamespace(question_id=QUESTION_ID, images=images, prompt=question, extra={})
        out = []
        for panel in panels:
            try:
                got = answer(panel.model, [item], Path(folder), batch_size=1, max_new_tokens=max_new_tokens)
            except Exception as err:  # noqa: BLE001  one variant's failure is shown in its own box
                detail = str(err).strip().splitlines()
                out.append(f"(error: {type(err).__name__}{': ' + detail[0] if detail else ''})")
                continue
            # one item in, one answer out (keyed by question id or by position: either is fine here)
            if got.texts:
                out.append(next(iter(got.texts.values())) or "(an empty answer)")
            else:
                out.append(f"(the image could not be used: {next(iter(got.unusable.values()), 'unknown')})")
    return out


def box_values(answers: list[str]):
    """What Gradio's click handler returns for the answer boxes: a list for several boxes, the
    string itself for one (Gradio shows a returned list as the lone box's text: "['...']")."""
    return answers[0] if len(answers) == 1 else answers


def build_app(sweep_name: str, panels: list[Panel], max_new_tokens: int = 64):
    """The Gradio page: image and question on top, one column per variant below."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    with gr.Blocks(title=f"vlmsweep demo: {sweep_name}", analytics_enabled=False) as app:
        gr.Markdown(f"## Sweep {sweep_name}: {len(panels)} variant(s) side by side\n"
                    "One image and one question go to every variant below; greedy answers, prompted "
                    "as evaluation prompts them.")
        with gr.Row():
            image = gr.Image(type="pil", image_mode="RGB", label="Image", sources=["upload", "clipboard"],
                             elem_id="demo-image", height=260)
            with gr.Column():
                question = gr.Textbox(label="Question", lines=2, placeholder="What colour is the ball?",
                                      max_length=4000, elem_id="demo-question")
                button = gr.Button("Ask every variant", variant="primary", elem_id="demo-ask")
        boxes = []
        with gr.Row(equal_height=True, elem_id="demo-variants"):
            for i, panel in enumerate(panels):
                with gr.Column(min_width=220, elem_classes=["demo-variant"], elem_id=f"variant-{i}"):
                    gr.Markdown(panel.card())
                    boxes.append(gr.Textbox(label=f"{panel.name}: answer", lines=3, interactive=False,
                                            elem_id=f"answer-{i}"))

        def respond(img, text):
            return box_values(ask(panels, img, text, max_new_tokens))

        for trigger in (button.click, question.submit):
            trigger(respond, [image, question], boxes, concurrency_limit=1)
    return app


def add_demo_parser(subparsers):
    p = subparsers.add_parser("demo", help="web page: one image + question to several variants, answers side by side",
                              description=DEMO_HELP)
    p.add_argument("sweep", metavar="SWEEP", help="sweep name or run id")
    p.add_argument("--variants", help="comma-separated variant names (default: every finished variant)")
    p.add_argument("--host", default=LOOPBACK, help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, help="port (default: the first free one from 7860)")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="answer length cap (default 64)")
    p.add_argument("--work-dir", help="work dir holding the MLflow record, stages and presets (default ./.vlmsweep)")
    p.set_defaults(fn=cmd_demo)
    return p


def _port(text: str) -> int:
    import argparse

    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 1-65535")
    return value


def prepare(args, log=print):
    """(the Gradio app, its panels) for parsed `demo` arguments: variants found, models loaded."""
    from vlmsweep.config.workdir import WorkDir

    work = WorkDir.at(args.work_dir)
    names = [n.strip() for n in args.variants.split(",") if n.strip()] if args.variants else None
    sweep_name, panels = sweep_panels(work, args.sweep, names)
    load_models(work, args.sweep, panels, log=log)
    return build_app(sweep_name, panels, args.max_new_tokens), panels


def launch(app, args, block: bool = True, out=sys.stdout):
    """Serve the page on --host/--port and print its address; then, if BLOCK, serve until
    interrupted (Ctrl-C)."""
    if args.host not in (LOOPBACK, "localhost", "::1"):
        print(f"note: the demo has no login; anything that reaches {args.host} can use it", file=sys.stderr)
    from vlmsweep.data.images import DEFAULT_MAX_IMAGE_BYTES

    app.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False, prevent_thread_lock=True,
               ssr_mode=False, mcp_server=False, show_error=True, quiet=True, footer_links=[],
               max_file_size=DEFAULT_MAX_IMAGE_BYTES)   # uploads: ingest's limit on an image file
    print(f"demo: {app.local_url} (Ctrl-C stops it)", file=out, flush=True)
    if block:
        app.block_thread()
    return app.local_url


def cmd_demo(args) -> int:
    app, _ = prepare(args)
    launch(app, args, block=True)
    return 0
