"""`vlmsweep demo SWEEP`: one image and one question to several variants, answers side by side.

A tiny sweep is written into a work dir: two variants of different architectures (SigLIP +
Llama, CLIP + Qwen2), each a finished stage output with moved weights, recorded in the work
dir's sqlite MLflow store as sweep/tracking.py records them (sweep run, variant runs with axis
tags and eval scores, stage runs naming their outputs), plus a failed variant that the demo
leaves out. The page is served on 127.0.0.1 and driven in a real browser (Debian's chromium,
through Playwright): upload an image, ask, and each variant's box shows the answer evaluation's
own generation gives for that variant's model, under its axes and scores.
"""

from __future__ import annotations

import argparse
import socket

import psutil
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from _tiny import finished_stage, random_image
from vlmsweep.config.errors import InputError
from vlmsweep.eval.generate import answer, load_checkpoint
from vlmsweep.serve.demo import Panel, add_demo_parser, ask, launch, prepare, sweep_panels

CHROMIUM = "/usr/bin/chromium"   # Debian's (`make system-deps`); Playwright's own download is not used
QUESTION = "What colour is the ball?"
MAX_NEW = 8
# variant: (vision family, llm family, axes, eval scores)
VARIANTS = {
    "sig-llama": ("siglip", "llama", {"vision": "SigLIP", "llm": "Llama"},
                  {"eval/vqav2/accuracy": 61.5, "eval/pope/f1": 80.3}),
    "clip-qwen": ("clip", "qwen2", {"vision": "CLIP", "llm": "Qwen2"},
                  {"eval/vqav2/accuracy": 58.0, "eval/pope/f1": 84.5}),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from vlmsweep.config.workdir import WorkDir

    tmp = tmp_path_factory.mktemp("demo")
    work = WorkDir.at(tmp / "work")
    client = MlflowClient(work.tracking_uri)
    eid = client.create_experiment("vlmsweep", artifact_location=(tmp / "artifacts").as_uri())

    def run(name, tags, status="FINISHED"):
        run_id = client.create_run(eid, run_name=name, tags=tags).info.run_id
        client.set_terminated(run_id, status)
        return run_id

    parent = run("grid", {"vlmsweep.kind": "sweep", "vlmsweep.sweep_name": "grid", "vlmsweep.sweep_id": "g",
                          "vlmsweep.work_dir": work.uri})
    stages = {}
    for seed, (name, (vision, llm, axes, scores)) in enumerate(VARIANTS.items()):
        stages[name] = finished_stage(vision, llm, str(work.presets), work.path("stages", f"finetune-{name}"), seed)
        var = run(name, {"vlmsweep.kind": "variant", "mlflow.parentRunId": parent,
                         **{f"axis.{k}": v for k, v in axes.items()}})
        client.log_batch(var, metrics=[Metric(k, v, 0, 0) for k, v in scores.items()])
        stage = run("finetune", {"vlmsweep.kind": "stage", "mlflow.parentRunId": var, "vlmsweep.output": stages[name]})
        client.set_tag(var, "vlmsweep.stage.finetune", stage)
    run("broken", {"vlmsweep.kind": "variant", "mlflow.parentRunId": parent, "axis.vision": "CLIP",
                   "axis.llm": "Llama"}, status="FAILED")
    return work, stages


def demo_args(argv: list[str]):
    parser = argparse.ArgumentParser(prog="vlmsweep")
    add_demo_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["demo", *argv])


def expected_answer(stage: str, root: str, image_dir) -> str:
    """What evaluation's generation answers for this stage (loaded afresh), the image read from disk."""
    from types import SimpleNamespace

    item = SimpleNamespace(question_id="q", images=["ball.png"], prompt=QUESTION, extra={})
    texts = answer(load_checkpoint(stage, root), [item], image_dir, batch_size=1, max_new_tokens=MAX_NEW).texts
    assert len(texts) == 1
    return next(iter(texts.values()))


def test_variants_are_picked_by_name_and_unknown_names_are_one_line(sweep):
    work, _ = sweep
    name, panels = sweep_panels(work, "grid")
    assert name == "grid" and [p.name for p in panels] == ["sig-llama", "clip-qwen"]   # finished ones, report order
    with pytest.raises(InputError, match="has no variant 'sig-lama' \\(did you mean sig-llama\\?\\)"):
        sweep_panels(work, "grid", ["sig-lama"])
    with pytest.raises(InputError, match="no sweep named or with run id 'nope'"):
        sweep_panels(work, "nope")
    text = Panel("v", {"vision": "CLIP"}, [("vqav2", 58.0), ("pope (f1)", None)], "FINISHED").card()
    assert "vision: **CLIP**" in text and "vqav2 58.0 · pope (f1) –" in text
    assert ask([], None, "   ") == [] and ask([Panel("v", {}, [], "FINISHED")], None, "") == ["(ask a question first)"]


def test_demo_page_answers_with_every_variant_side_by_side(sweep, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    work, stages = sweep
    image_path = tmp_path / "ball.png"
    random_image(7, height=40, width=56).save(image_path)   # not square: the processor pads it
    root = str(work.presets)
    want = {name: expected_answer(stage, root, tmp_path) for name, stage in stages.items()}
    assert all(want.values()) and len(set(want.values())) == len(want), want   # two different, non-empty answers

    port = free_port()
    args = demo_args(["grid", "--variants", "sig-llama,clip-qwen", "--port", str(port), "--work-dir", work.uri,
                      "--max-new-tokens", str(MAX_NEW)])
    assert args.host == "127.0.0.1"   # this machine only, unless asked
    app, panels = prepare(args, log=lambda _: None)
    assert [p.stage_dir for p in panels] == [stages["sig-llama"], stages["clip-qwen"]]
    launch(app, args, block=False)
    try:
        listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
                     and c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/")
                page.locator("#demo-image input[type=file]").set_input_files(str(image_path))
                expect(page.locator("#demo-image img")).to_be_visible(timeout=30_000)   # uploaded
                page.locator("#demo-question textarea").fill(QUESTION)
                page.locator("#demo-ask").click()
                for i, name in enumerate(["sig-llama", "clip-qwen"]):
                    expect(page.locator(f"#answer-{i} textarea")).to_have_value(want[name], timeout=60_000)
                cards = [page.locator(f"#variant-{i}").inner_text() for i in range(2)]
                assert page.locator("#variant-2").count() == 0   # the failed variant was not asked for
            finally:
                browser.close()
    finally:
        app.close()
    assert "sig-llama" in cards[0] and "vision: SigLIP" in cards[0] and "llm: Llama" in cards[0]
    assert "vqav2 61.5 · pope (f1) 80.3" in cards[0]     # the report's headline columns, one decimal
    assert "clip-qwen" in cards[1] and "vision: CLIP" in cards[1] and "vqav2 58.0 · pope (f1) 84.5" in cards[1]


def test_a_lone_variant_gets_its_answer_not_a_list():
    from vlmsweep.serve.demo import box_values

    assert box_values(["a red cube"]) == "a red cube"
    assert box_values(["a", "b"]) == ["a", "b"]
