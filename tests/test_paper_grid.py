"""The paper's grid with real Hub names plans on a machine with no weights, no data, no network."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmsweep.config.grid import load_grid, select

ROOT = Path(__file__).resolve().parents[1]


def dry_run(grid: Path, tmp_path: Path, *args: str) -> str:
    """`vlmsweep sweep GRID --dry-run ARGS` offline (no Hub, no $VLMSWEEP_DATA); its output.
    In this process, as a dry run starts neither Ray nor a model: a subprocess would spend ~5 s
    importing torch, transformers and Ray per call. (One test below keeps a real process for
    the exit code and stderr of a bad name.)"""
    import huggingface_hub.constants

    from vlmsweep.cli import main

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        # huggingface_hub reads the variable once, at import: this process imported it already
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.delenv("VLMSWEEP_DATA", raising=False)
        with contextlib.redirect_stdout(out):
            code = main(["sweep", str(grid), "--dry-run", *args, "--work-dir", str(tmp_path)])
    assert code == 0, out.getvalue()[-2000:]
    return out.getvalue()


def assert_offline_plan(text: str, sweep: str, first_stage: str, variants, hubs) -> None:
    """An offline dry run planned every variant from its first stage, and noted each Hub model it
    could not read instead of failing on it."""
    assert f"sweep {sweep}: {len(variants)} variant(s)" in text
    for name in variants:
        assert f"  {name}: {first_stage}-" in text
    for hub in hubs:
        assert f"{hub}: not available on this machine" in text


def assert_zoo_unbuilt(text: str, tmp_path: Path, names) -> None:
    """A dry run before `vlmsweep zoo build` notes each zoo part it needs, and fails on none."""
    for name in names:
        assert f"note: zoo:{name} is not built in {tmp_path / 'zoo'}: run `vlmsweep zoo build`" in text
PAPER = ROOT / "experiments/paper/tinyllava.yaml"
MINI = ROOT / "experiments/mini/tinyllava.yaml"


def test_paper_grid_dry_run_passes_offline(tmp_path):
    text = dry_run(PAPER, tmp_path)
    assert "sweep tinyllava-paper: 12 variant(s)" in text
    assert "TinyLLaVA-share-Sig-Phi: pretrain-" in text and "share_pretrain-" in text
    assert "microsoft/phi-2: not available on this machine" in text
    assert "data not prepared here, stage ids provisional" in text


def test_mini_grid_dry_run_before_the_zoo_is_built(tmp_path):
    """A fresh machine plans the miniature grid before `vlmsweep zoo build`: notes, not errors."""
    text = dry_run(MINI, tmp_path, "--set", "data.synthetic.size=tiny")
    assert "sweep tinyllava-mini: 12 variant(s)" in text and "TinyLLaVA-share-Sig-Phi: pretrain-" in text
    assert_zoo_unbuilt(text, tmp_path, ("tinyllama", "stablelm", "phi", "clip", "siglip"))
    assert "unique stages: data 2, pretrain 12, finetune 12, eval 12, share_pretrain 6 (total 44)" in text


def test_paper_variant_carries_the_papers_hyperparameters():
    grid = select(load_grid(PAPER), "TinyLLaVA-share-Sig-Phi")
    cfg = grid.variants[0].config
    assert cfg.model.vision.checkpoint == "google/siglip-so400m-patch14-384"
    assert cfg.model.llm.checkpoint == "microsoft/phi-2" and cfg.model.connector.name == "mlp2x_gelu"
    assert cfg.data.name == "sharegpt4v"
    stages = {s.name: s for s in cfg.recipe.stages}
    assert list(stages) == ["pretrain", "share_pretrain", "finetune"]
    assert (stages["pretrain"].training.lr, stages["pretrain"].training.global_batch) == (1e-3, 256)
    share = stages["share_pretrain"]
    assert (share.training.lr, share.training.global_batch) == (2e-5, 256)
    assert (share.vision.mode, share.vision.from_layer, share.llm.mode, share.connector.mode) == ("partial", 12, "full", "full")
    assert (stages["finetune"].training.lr, stages["finetune"].training.global_batch) == (2e-5, 128)
    assert (stages["pretrain"].training.max_length, stages["finetune"].training.max_length) == (2048, 3072)
    for s in stages.values():
        t = s.training
        assert (t.zero_stage, t.precision, t.workers, t.gpus_per_worker) == (3, "bf16", 8, 1)
        assert t.global_batch == t.micro_batch * t.workers * t.grad_accum


def test_one_variant_of_the_paper_grid_by_its_paper_name(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    text = dry_run(PAPER, tmp_path, "--variant", "TinyLLaVA-share-Sig-Phi")
    assert "1 variant(s)" in text and "TinyLLaVA-share-Sig-Phi: pretrain-" in text
    bad = subprocess.run([sys.executable, "-m", "vlmsweep.cli", "sweep", str(PAPER), "--dry-run",
                          "--variant", "TinyLLaVA-share-Sig-Phi3", "--work-dir", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "TinyLLaVA-share-Sig-Phi" in bad.stderr  # lists the names there are


BAKLLAVA = ROOT / "experiments/paper/bakllava.yaml"
BAKLLAVA_MINI = ROOT / "experiments/mini/bakllava.yaml"


def test_bakllava_dry_run_passes_offline(tmp_path):
    text = dry_run(BAKLLAVA, tmp_path)
    assert "sweep BakLLaVA-1: 1 variant(s)" in text and "BakLLaVA-1: pretrain-" in text and "→ finetune-" in text
    assert "mistralai/Mistral-7B-v0.1: not available on this machine" in text
    assert "openai/clip-vit-large-patch14-336: not available on this machine" in text
    assert "data not prepared here, stage ids provisional" in text


def test_bakllava_carries_llava15s_recipe_and_bakllavas_choices():
    """BakLLaVA's scripts: base Mistral-7B-v0.1, CLIP-L/336 from its penultimate layer, mlp2x_gelu,
    plain then Vicuna v1 templates, padded images; LLaVA-1.5's lr and batches, ZeRO-2 then ZeRO-3."""
    from vlmsweep.config.grid import load_any

    (variant,) = load_any(BAKLLAVA).variants
    cfg = variant.config
    m = cfg.model
    assert (m.llm.family, m.llm.checkpoint, m.llm.template) == ("mistral", "mistralai/Mistral-7B-v0.1", "vicuna")
    assert (m.vision.family, m.vision.checkpoint, m.vision.feature_layer, m.vision.feature_select,
            m.vision.image_aspect) == ("clip", "openai/clip-vit-large-patch14-336", -2, "patch", "pad")
    assert m.connector.name == "mlp2x_gelu" and cfg.data.name == "llava"
    stages = {s.name: s for s in cfg.recipe.stages}
    assert list(stages) == ["pretrain", "finetune"]
    pre, fine = stages["pretrain"], stages["finetune"]
    assert (pre.template, pre.vision.mode, pre.connector.mode, pre.llm.mode) == ("plain", "frozen", "full", "frozen")
    assert (fine.template, fine.vision.mode, fine.connector.mode, fine.llm.mode) == ("chat", "frozen", "full", "full")
    assert (pre.training.lr, pre.training.global_batch, pre.training.zero_stage) == (1e-3, 256, 2)
    assert (fine.training.lr, fine.training.global_batch, fine.training.zero_stage) == (2e-5, 128, 3)
    for t in (pre.training, fine.training):
        assert (t.epochs, t.warmup_ratio, t.schedule, t.weight_decay, t.precision, t.workers) == \
            (1, 0.03, "cosine", 0.0, "bf16", 8)
        assert t.global_batch == t.micro_batch * t.workers * t.grad_accum and t.grad_accum == 1


LLAVA15 = ROOT / "experiments/paper/llava15.yaml"
LLAVA15_MINI = ROOT / "experiments/mini/llava15.yaml"


def test_llava15_dry_run_passes_offline(tmp_path):
    text = dry_run(LLAVA15, tmp_path)
    assert_offline_plan(text, "llava15-paper", "pretrain", ("LLaVA-1.5-7B", "LLaVA-1.5-13B"),
                        ("lmsys/vicuna-7b-v1.5", "lmsys/vicuna-13b-v1.5", "openai/clip-vit-large-patch14-336"))
    # the two variants share no stage: the LLM is in every stage's identity
    assert "unique stages: data 1, pretrain 2, finetune 2, eval 2" in text


def test_llava15_carries_the_published_recipe():
    """LLaVA-1.5's scripts/v1_5: CLIP-L/336 from its penultimate layer, padded images, mlp2x_gelu,
    Vicuna v1.5 with the v1 template; pretrain connector only at 1e-3 / batch 256 with ZeRO-2,
    finetune connector + LLM at 2e-5 / batch 128 with ZeRO-3, grouped by modality, 2048 tokens."""
    from vlmsweep.config.grid import load_any

    variants = {v.name: v.config for v in load_any(LLAVA15).variants}
    assert sorted(variants) == ["LLaVA-1.5-13B", "LLaVA-1.5-7B"]
    for size, cfg in variants.items():
        m = cfg.model
        assert (m.llm.family, m.llm.checkpoint, m.llm.template) == \
            ("llama", f"lmsys/vicuna-{size.split('-')[-1].lower()}-v1.5", "vicuna")
        assert (m.vision.family, m.vision.checkpoint, m.vision.feature_layer, m.vision.image_aspect) == \
            ("clip", "openai/clip-vit-large-patch14-336", -2, "pad")
        assert m.connector.name == "mlp2x_gelu" and cfg.data.name == "llava"
        pre, fine = cfg.recipe.stages
        assert (pre.name, pre.template, pre.vision.mode, pre.connector.mode, pre.llm.mode) == \
            ("pretrain", "plain", "frozen", "full", "frozen")
        assert (fine.name, fine.template, fine.vision.mode, fine.connector.mode, fine.llm.mode) == \
            ("finetune", "chat", "frozen", "full", "full")
        assert (pre.training.lr, pre.training.global_batch, pre.training.zero_stage, pre.training.packing) == \
            (1e-3, 256, 2, True)
        assert (fine.training.lr, fine.training.global_batch, fine.training.zero_stage, fine.training.packing) == \
            (2e-5, 128, 3, False)
        for t in (pre.training, fine.training):
            assert (t.epochs, t.max_length, t.warmup_ratio, t.schedule, t.precision, t.workers, t.grad_accum) == \
                (1, 2048, 0.03, "cosine", "bf16", 8, 1)


DSVL = ROOT / "experiments/paper/dsvl.yaml"
DSVL_MINI = ROOT / "experiments/mini/dsvl.yaml"


def test_dsvl_dry_run_passes_offline(tmp_path):
    text = dry_run(DSVL, tmp_path)
    assert_offline_plan(text, "dsvl-paper", "projector",
                        ("DSVL-7B-text0.0", "DSVL-7B-text0.2", "DSVL-13B-text0.0", "DSVL-13B-text0.2"),
                        ("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "openai/clip-vit-large-patch14-336"))


@pytest.mark.parametrize("path", [DSVL, DSVL_MINI])
def test_dsvl_carries_its_parts_and_stages(path):
    """Penultimate-layer features, ln_mlp, image delimiters, packing, the text-only share as an
    axis; the projector alone, then projector + LLM with vision frozen (3 epochs, lr 3e-5 in the
    real one)."""
    from vlmsweep.config.grid import load_any

    variants = load_any(path).variants
    assert sorted({v.config.data.text_only_ratio for v in variants}) == ([0.0, 0.2] if path == DSVL else [0.0, 0.3])
    for v in variants:
        cfg = v.config
        m = cfg.model
        assert (m.vision.family, m.vision.feature_layer, m.connector.name) == ("clip", -2, "ln_mlp")
        assert (m.llm.family, m.llm.template, m.llm.image_delimiters) == ("llama", "vicuna", True)
        projector, finetune = cfg.recipe.stages
        assert (projector.name, projector.vision.mode, projector.connector.mode, projector.llm.mode) == \
            ("projector", "frozen", "full", "frozen")
        assert (finetune.name, finetune.vision.mode, finetune.connector.mode, finetune.llm.mode) == \
            ("finetune", "frozen", "full", "full")
        assert projector.split == finetune.split == "instruct"
        assert all(s.training.packing for s in (projector, finetune))
        if path == DSVL:
            assert (finetune.training.epochs, finetune.training.lr, finetune.training.max_length) == (3, 3e-5, 2048)
            assert cfg.data.splits == {"instruct": "${VLMSWEEP_DATA}/dsvl-mix"}


def test_dsvl_mini_dry_run_before_the_zoo_is_built(tmp_path):
    text = dry_run(DSVL_MINI, tmp_path, "--set", "data.synthetic.size=tiny")
    assert "sweep dsvl-mini: 2 variant(s)" in text
    assert "DSVL-7B-text0.0: projector-" in text and "DSVL-7B-text0.3: projector-" in text


PRISMATIC = ROOT / "experiments/paper/prismatic.yaml"
PRISMATIC_MINI = ROOT / "experiments/mini/prismatic.yaml"
ENCODERS = ROOT / "experiments/studies/encoders.yaml"
ENCODERS_MINI = ROOT / "experiments/mini/encoders.yaml"


def test_prismatic_dry_run_passes_offline(tmp_path):
    text = dry_run(PRISMATIC, tmp_path)
    assert_offline_plan(text, "prismatic-paper", "finetune", ("prism-siglip-controlled+7b", "prism-dinosiglip-controlled+7b"),
                        ("facebook/dinov2-with-registers-large", "google/siglip-so400m-patch14-384",
                         "meta-llama/Llama-2-7b-hf"))


@pytest.mark.parametrize("path", [PRISMATIC, PRISMATIC_MINI])
def test_prismatic_carries_its_fusion_and_one_stage_recipe(path):
    """DINOv2 + SigLIP from their second-to-last layers, each resized without padding (384 px in
    the real one), fused_mlp_gelu, the "pure" prompt; one stage of connector + LLM."""
    grid = load_grid(path)
    fused = select(grid, "prism-dinosiglip-controlled+7b").variants[0].config
    dino, siglip = [e for _, e in fused.model.encoders()]
    assert (dino.family, siglip.family) == (("dinov2_reg", "siglip") if path == PRISMATIC else ("dinov2", "siglip"))
    assert dino.feature_layer == siglip.feature_layer == -2 and dino.image_aspect == siglip.image_aspect == "resize"
    assert (fused.model.connector.name, fused.model.llm.template) == ("fused_mlp_gelu", "pure")
    for v in grid.variants:
        (stage,) = v.config.recipe.stages
        assert (stage.vision.mode, stage.connector.mode, stage.llm.mode) == ("frozen", "full", "full")
        if path == PRISMATIC:
            assert (stage.training.lr, stage.training.weight_decay, stage.training.epochs) == (2e-5, 0.1, 1)
            assert (stage.training.global_batch, stage.training.max_length) == (128, 2048)
            assert dino.image_size == 384 and dino.checkpoint == "facebook/dinov2-with-registers-large"


@pytest.mark.parametrize("path", [ENCODERS, ENCODERS_MINI])
def test_the_encoder_study_varies_the_encoder_and_the_seed_only(path, tmp_path):
    grid = load_grid(path)
    assert grid.axes == {"vision": ["clip", "siglip", "dinov2", "dinov2+siglip"], "seed": ["0", "1", "2"]}
    fixed = {v.config.model_dump_json(exclude={"name": True, "seed": True, "model": {"vision"}}) for v in grid.variants}
    assert len(fixed) == 1     # everything but the encoder and the seed is one config
    text = dry_run(path, tmp_path, *(["--set", "data.synthetic.size=tiny"] if path == ENCODERS_MINI else []))
    assert f"sweep {grid.name}: 12 variant(s)" in text and "enc-dinov2+siglip-seed2: finetune-" in text


@pytest.mark.parametrize("path, sweep, variants, zoo_parts", [
    (BAKLLAVA_MINI, "BakLLaVA-mini", 1, ("mistral", "clip")),
    (LLAVA15_MINI, "LLaVA-1.5-7B", 1, ("tinyllama", "clip")),
    (PRISMATIC_MINI, "prismatic-mini", 2, ("dinov2", "siglip", "tinyllama")),
    (ROOT / "experiments/demo.yaml", "demo-base-siglip-llama", 1, ("tinyllama", "siglip")),   # `make demo`'s
])
def test_a_miniature_plans_before_the_zoo_is_built(path, sweep, variants, zoo_parts, tmp_path):
    text = dry_run(path, tmp_path, "--set", "data.synthetic.size=tiny")
    assert f"sweep {sweep}: {variants} variant(s)" in text
    assert_zoo_unbuilt(text, tmp_path, zoo_parts)
