"""`vlmsweep chat`: typed into a real pseudo-terminal, and its answers are evaluation's answers.

The checkpoint is a tiny BakLLaVA-shaped stage (CLIP → mlp2x_gelu → Mistral, the tiny presets)
written as the worker writes one, its trainable weights moved and a LoRA adapter on the LLM
kept unmerged. The terminal test starts the real CLI on a pty, types, and reads what a user
would see; the first answer must equal what evaluation's `answer` generates for the same
image and question.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from _tiny import random_image
from vlmsweep.config.errors import ConfigError, InputError
from vlmsweep.config.load import dump_resolved, resolve
from vlmsweep.eval.generate import answer, load_checkpoint
from vlmsweep.serve.backends import ChatError, Sampling, Turn, VLMChat, load_chat_model, load_image
from vlmsweep.train.stage_output import save_stage
from vlmsweep.train.worker import build_stage_model

CLI = [sys.executable, "-m", "vlmsweep.cli"]
LORA = {"mode": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
QUESTION = "What colour is the ball?"
NEW_TOKENS = 12


def bakllava_tiny():
    stage = {"name": "finetune", "split": "instruct", "template": "chat", "vision": {"mode": "frozen"},
             "connector": {"mode": "full"}, "llm": LORA, "training": {"steps": 1, "global_batch": 1, "micro_batch": 1}}
    return resolve({"name": "bakllava-tiny", "recipe": {"name": "one", "stages": [stage]},
                    "model": {"vision": {"family": "clip"}, "llm": {"family": "mistral", "template": "vicuna"},
                              "connector": {"name": "mlp2x_gelu"}}})


@pytest.fixture(scope="module")
def chat_setup(tmp_path_factory):
    """A work dir holding the presets and one trained stage under stages/, plus images."""
    root = tmp_path_factory.mktemp("chat")
    work = root / "work"
    presets = str(work / "presets")
    cfg = bakllava_tiny()
    vlm, _, _ = build_stage_model(cfg, 0, presets, None)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in vlm.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    stage = work / "stages" / "finetune-test"
    save_stage(vlm, stage, stage="finetune", modes={"vision": "frozen", "connector": "full", "llm": "lora"},
               init_dir=None, config_yaml=dump_resolved(cfg), summary={})
    images = root / "images"
    images.mkdir()
    for i, size in enumerate([(32, 32), (40, 24), (24, 36)]):
        random_image(i, height=size[1], width=size[0]).save(images / f"img{i}.png")
    (images / "broken.png").write_text("not an image")
    return SimpleNamespace(root=root, work=work, presets=presets, stage=str(stage), images=images)


class Terminal:
    """A process on a pseudo-terminal: write lines, read the screen up to a marker."""

    def __init__(self, argv: list[str], cwd: str):
        master, slave = pty.openpty()
        env = {**os.environ, "TERM": "dumb", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("VLMSWEEP_WORK_DIR", None)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                                     close_fds=True, start_new_session=True)
        os.close(slave)
        self.master, self.screen = master, ""

    def read_until(self, marker: str, timeout: float = 180) -> str:
        """Everything up to and including the next `marker` (CRLF and escape codes normalised)."""
        end = time.time() + timeout
        while marker not in self.screen:
            left = end - time.time()
            if left <= 0 or self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                raise AssertionError(f"no {marker!r} on the screen; it shows:\n{self.screen[-2000:]}")
            if select.select([self.master], [], [], min(left, 1.0))[0]:
                try:
                    data = os.read(self.master, 4096)
                except OSError:   # the process is gone and the pty closed
                    data = b""
                text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", data.decode("utf-8", "replace"))
                self.screen += text.replace("\r\n", "\n")
        before, _, self.screen = self.screen.partition(marker)
        return before + marker

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            os.close(self.master)


def test_chat_in_a_terminal(chat_setup, tmp_path):
    s = chat_setup
    term = Terminal([*CLI, "chat", s.stage, "--image", str(s.images / "img1.png"),
                     "--max-new-tokens", str(NEW_TOKENS)], cwd=str(tmp_path))
    try:
        banner = term.read_until("user> ")
        assert "vlmsweep chat: stage finetune of bakllava-tiny: clip" in banner and "mistral" in banner
        assert "LoRA on llm unmerged" in banner and "greedy" in banner and "1 image(s) attached" in banner

        term.type(QUESTION)   # first turn: the --image, and the question
        first = term.read_until("user> ").split("assistant> ", 1)[1].removesuffix("\nuser> ")
        model = load_checkpoint(s.stage, s.presets)
        item = SimpleNamespace(question_id="q", images=["img1.png"], prompt=QUESTION)
        (expected,) = answer(model, [item], s.images, max_new_tokens=NEW_TOKENS).texts.values()
        assert first == expected, (first, expected)

        term.type("And what is next to it?")   # a text-only second turn
        second = term.read_until("user> ").split("assistant> ", 1)[1].removesuffix("\nuser> ")
        chat = VLMChat(s.stage, s.presets)
        turns = [Turn("user", QUESTION, [load_image(str(s.images / "img1.png"))]), Turn("assistant", first),
                 Turn("user", "And what is next to it?")]
        assert second == chat.reply(turns, Sampling(NEW_TOKENS))

        for bad, why in (("missing.png", "no such file"), ("broken.png", "can't be decoded"),
                         (".", "a directory, not an image")):
            term.type(f"/image {s.images / bad}")
            shown = term.read_until("user> ")
            errors = [line for line in shown.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and why in errors[0], shown
        term.type("/image " + str(s.images / "img0.png"))
        assert "1 attached" in term.read_until("user> ")
        term.type("/image " + str(s.images / "img2.png"))
        assert "2 attached" in term.read_until("user> ")
        term.type("Are these the same shape?")   # two images in one turn
        assert "assistant> " in term.read_until("user> ")
        term.type("/nope")
        assert "error: unknown command /nope" in term.read_until("user> ")
        term.type("/reset")
        assert "(conversation cleared)" in term.read_until("user> ")
        term.type("/quit")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_a_bad_image_at_start_up_exits_2_in_one_line(chat_setup, tmp_path):
    s = chat_setup
    for bad, why in (("missing.png", "no such file"), ("broken.png", "can't be decoded")):
        out = subprocess.run([*CLI, "chat", s.stage, "--image", str(s.images / "img0.png"), str(s.images / bad)],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL)
        assert out.returncode == 2, out.stderr[-2000:]
        assert out.stderr.count("\n") == 1 and "--image" in out.stderr and why in out.stderr, out.stderr


def test_quantize_without_a_gpu_is_refused_before_anything_is_read(tmp_path):
    from vlmsweep.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InputError) as err:   # the checkpoint doesn't exist: it is never looked at
        load_chat_model(str(tmp_path / "nowhere"), quantize="4bit")
    assert "\n" not in str(err.value) and "--quantize" in str(err.value) and "CUDA GPU" in str(err.value)
    assert main(["chat", str(tmp_path / "nowhere"), "--quantize", "8bit"]) == 2


def test_stage_dir_merged_lora_and_its_hf_export_answer_alike(chat_setup, tmp_path):
    """Several images in one turn, a text-only turn, images again: the same greedy answers from
    the stage (adapters unmerged, and merged) and from its hf-llava export in plain transformers."""
    from vlmsweep.export.hf_llava import export_hf_llava

    s = chat_setup
    export_hf_llava(s.stage, tmp_path / "hf", s.presets)
    models = {"unmerged": load_chat_model(s.stage), "merged": load_chat_model(s.stage, lora="merged"),
              "export": load_chat_model(str(tmp_path / "hf"))}
    assert type(models["export"]).__name__ == "LlavaChat"
    img = [load_image(str(s.images / f"img{i}.png")) for i in range(3)]
    questions = [("Are these the same?", img[:2]), ("Why?", []), ("And this one?", img[2:])]
    replies = {name: [] for name in models}
    for name, model in models.items():
        turns = []
        for text, images in questions:
            turns.append(Turn("user", text, images))
            reply = model.reply(turns, Sampling(NEW_TOKENS))
            replies[name].append(reply)
            turns.append(Turn("assistant", reply))
    assert replies["unmerged"] == replies["merged"] == replies["export"], replies
    with pytest.raises(InputError, match="merged already"):
        load_chat_model(str(tmp_path / "hf"), lora="unmerged")

    sampled = Sampling(NEW_TOKENS, temperature=0.9, top_p=0.9)
    chat, turns = models["unmerged"], [Turn("user", QUESTION, img[:1])]
    torch.manual_seed(5)
    first = chat.reply(turns, sampled)
    torch.manual_seed(5)
    assert chat.reply(turns, sampled) == first   # --seed makes sampling repeatable


def test_sweep_slash_variant_chats_with_the_variants_last_stage(chat_setup, monkeypatch):
    from mlflow.tracking import MlflowClient

    from vlmsweep.config.workdir import WorkDir

    s = chat_setup
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = WorkDir.at(s.work)
    client = MlflowClient(work.tracking_uri)
    eid = client.create_experiment("vlmsweep")
    sweep = client.create_run(eid, run_name="grid", tags={"vlmsweep.kind": "sweep", "vlmsweep.sweep_name": "grid",
                                                          "vlmsweep.work_dir": work.uri}).info.run_id
    variant = client.create_run(eid, run_name="bak", tags={"vlmsweep.kind": "variant",
                                                           "mlflow.parentRunId": sweep}).info.run_id
    stage = client.create_run(eid, run_name="finetune", tags={"vlmsweep.kind": "stage",
                                                              "vlmsweep.output": s.stage}).info.run_id
    client.set_tag(variant, "vlmsweep.stage.finetune", stage)
    chat = load_chat_model("grid/bak", work_dir=str(s.work))
    assert Path(chat.stage_dir) == Path(s.stage)
    with pytest.raises(ConfigError, match="has no variant 'nope'"):
        load_chat_model("grid/nope", work_dir=str(s.work))


def test_turn_problems_are_one_line_and_the_conversation_survives(chat_setup):
    from vlmsweep.serve.chat import Session

    s = chat_setup
    session = Session(load_chat_model(s.stage), Sampling(4))
    with pytest.raises(ChatError, match="can't contain <image>"):
        session.ask("look: <image>")
    session.ask("Hi.")
    session.sampling = Sampling(10 ** 6)   # over the context: refused, nothing sent, history kept
    session.attach(str(s.images / "img0.png"))
    with pytest.raises(ChatError) as err:
        session.ask("Describe it.")
    assert "context" in str(err.value) and "\n" not in str(err.value) and "image(s) dropped" in str(err.value)
    assert len(session.turns) == 2 and session.pending == []


def test_quantize_checks_name_what_is_missing(monkeypatch):
    """With a GPU but no bitsandbytes, or on --device cpu, still one line naming --quantize."""
    import importlib.util

    from vlmsweep.serve import quantize

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(InputError, match=r"--quantize: 8bit needs bitsandbytes: pip install 'vlmsweep\[gpu\]'"):
        quantize.check_quantize("8bit")
    with pytest.raises(InputError, match="--device cpu was given"):
        quantize.check_quantize("4bit", device="cpu")
    config = quantize.bnb_config("4bit", keep=quantize.LLAVA_KEEP)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert "vision_tower" in config.llm_int8_skip_modules
    assert quantize.bnb_config("8bit").load_in_8bit
