"""The zoo: tiny pretrained parts built through Ray Train, cached, and loaded as "zoo:<name>".

One module-scoped build (tiny world, a handful of steps per job) serves every test.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from vlmsweep.config.errors import ConfigError
from vlmsweep.config.schema import LLMConfig, VisionConfig
from vlmsweep.config.workdir import WorkDir
from vlmsweep.models.llm import load_llm, load_tokenizer
from vlmsweep.models.vision import VisionTower, load_image_processor, vision_geometry
from vlmsweep.zoo import build_zoo

STEPS = 20
LMS = {"tinyllama": ("llama", "LlamaForCausalLM", "<s>", "</s>"),
       "stablelm": ("stablelm", "StableLmForCausalLM", None, "<|endoftext|>"),
       "phi": ("phi", "PhiForCausalLM", None, "<|endoftext|>"),
       "mistral": ("mistral", "MistralForCausalLM", "<s>", "</s>")}
VISIONS = {"clip": ("clip", "CLIPVisionModel", 16), "siglip": ("siglip", "SiglipVisionModel", 36),
           "dinov2": ("dinov2", "Dinov2Model", 36)}


def _snapshot(root: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in sorted((root / "zoo").rglob("*"))
            if ".ray" not in p.parts and p.is_file()}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoowork")
    logs: list[str] = []
    t = time.time()
    built = build_zoo(root, "tiny", log=logs.append, steps=STEPS, num_cpus=2)
    return {"root": root, "built": built, "seconds": time.time() - t, "logs": logs,
            "presets": str(WorkDir.at(root).presets)}


def test_every_artifact_built_with_card(zoo):
    built = zoo["built"]
    assert set(built) == {"tokenizer", *LMS, *VISIONS}
    for name, info in built.items():
        d = Path(info["path"])
        assert d == zoo["root"] / "zoo" / name and (d / ".complete").exists() and (d / "zoo.json").exists()
        assert not info["cached"]
        card = (d / "README.md").read_text()
        assert f"zoo:{name}" in card and "seed=0 size=tiny" in card
        if name != "tokenizer":
            assert info["steps"] == STEPS and info["class"] in card and f"{info['params']:,}" in card
            assert f"{info['final_loss']:.4f}" in card


def test_loss_dropped(zoo):
    # not DINOv2's: a self-distillation loss first rises while the teacher sharpens (its
    # targets move), flat still after 150 tiny steps, down only over the small zoo's 1000
    # (8.5 -> 4.6); test_the_zoo_dinov2_is_image_only_with_imagenet_pixels checks collapse
    for name in (*LMS, *(v for v in VISIONS if v != "dinov2")):
        info = zoo["built"][name]
        assert info["final_loss"] < info["first_loss"], (name, info["losses"])


def test_lms_load_by_zoo_name_and_are_ordered(zoo):
    params = []
    for name, (family, cls, bos, eos) in LMS.items():
        cfg = LLMConfig(family=family, checkpoint=f"zoo:{name}")
        tok = load_tokenizer(cfg, zoo["presets"])
        assert tok.is_fast and tok.bos_token == bos and tok.eos_token == eos
        assert len(tok) == zoo["built"]["tokenizer"]["vocab_size"]  # one vocabulary for every family
        ids = tok("A small purple square is at the top right.", return_offsets_mapping=True)
        assert len(ids["input_ids"]) < 15  # a trained BPE, not bytes
        model = load_llm(cfg, zoo["presets"])
        assert type(model).__name__ == cls
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids["input_ids"]])).logits
        assert logits.shape[-1] == model.config.vocab_size >= len(tok)
        n = sum(p.numel() for p in model.parameters())
        assert n == zoo["built"][name]["params"]
        params.append(n)
    assert params == sorted(params) and len(set(params)) == 4  # 1.1B < 1.6B < 2.7B < 7B, in miniature


def test_the_zoo_mistral_keeps_its_sliding_window(zoo):
    """Mistral's window (64 tokens of its 128 trained) is in the saved config, so every loader honours it."""
    info = zoo["built"]["mistral"]
    model = load_llm(LLMConfig(family="mistral", checkpoint="zoo:mistral"), zoo["presets"])
    assert model.config.sliding_window == info["spec"]["sliding_window"] == 64 < info["spec"]["seq_len"]
    assert "sliding window 64" in (Path(info["path"]) / "README.md").read_text()


def test_vision_towers_load_by_zoo_name(zoo):
    patches = {}
    for name, (family, cls, n_patches) in VISIONS.items():
        cfg = VisionConfig(family=family, checkpoint=f"zoo:{name}")
        tower = VisionTower(cfg, zoo["presets"])
        assert type(tower.model).__name__ == cls
        geometry = vision_geometry(cfg, zoo["presets"])
        assert geometry.grid ** 2 == n_patches == zoo["built"][name]["num_patches"]
        processor = load_image_processor(cfg, zoo["presets"])
        side = tower.model.config.image_size
        pixels = processor(images=[Image.new("RGB", (64, 64))], return_tensors="pt")["pixel_values"]
        assert tuple(pixels.shape[-2:]) == (side, side)
        with torch.no_grad():
            assert tower(pixels).shape[1] == geometry.num_tokens
        patches[name] = geometry.grid
    assert patches["siglip"] > patches["clip"]
    # fused DINOv2 + SigLIP features are concatenated per patch: one grid for both (6x6)
    assert patches["dinov2"] == patches["siglip"] == 6


def test_the_zoo_dinov2_is_image_only_with_imagenet_pixels(zoo):
    """No text tower, no tokenizer in its key, DINOv2's own pixel statistics, and no collapse."""
    info = zoo["built"]["dinov2"]
    assert info["objective"] == "self_distill" and "tokenizer_hash" not in info
    assert info["spec"]["text_hidden"] is None and info["prototypes_used"] > 1
    processor = load_image_processor(VisionConfig(family="dinov2", checkpoint="zoo:dinov2"), zoo["presets"])
    assert type(processor).__name__.startswith("BitImageProcessor")
    assert list(processor.image_mean) == pytest.approx([0.485, 0.456, 0.406])
    assert list(processor.image_std) == pytest.approx([0.229, 0.224, 0.225])
    card = (Path(info["path"]) / "README.md").read_text()
    assert "self-distillation" in card and "zoo:tokenizer" not in card


def test_vision_features_are_centred_over_the_world(zoo):
    """The features VLMs read (feature_layer -2) have ~zero mean over the world's images: a
    shared offset would drown what differs between images (see zoo.jobs.center_features)."""
    from vlmsweep.data.shards import iter_samples

    (world,) = (zoo["root"] / "zoo" / ".world").iterdir()
    images = [Image.open(io.BytesIO(s["images"][0])).convert("RGB")
              for s in iter_samples(world / "captions_short")]
    for name, (family, _, _) in VISIONS.items():
        cfg = VisionConfig(family=family, checkpoint=f"zoo:{name}")
        tower = VisionTower(cfg, zoo["presets"]).eval()
        pixels = load_image_processor(cfg, zoo["presets"])(images=images, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            feats = tower(pixels)
        info = zoo["built"][name]
        assert info["centred_layer"] == -2 and info["removed_offset_norm"] > 0
        assert feats.mean(dim=(0, 1)).norm() < 1e-3 * info["removed_offset_norm"] + 1e-4
        assert "centred over the world's images" in (Path(info["path"]) / "README.md").read_text()


def test_second_build_is_a_cache_hit(zoo):
    before = _snapshot(zoo["root"])
    t = time.time()
    again = build_zoo(zoo["root"], "tiny", log=lambda _: None, steps=STEPS)
    assert time.time() - t < 3
    assert all(info["cached"] for info in again.values())
    assert _snapshot(zoo["root"]) == before
    assert {n: i["key"] for n, i in again.items()} == {n: i["key"] for n, i in zoo["built"].items()}
    # one part alone: an image-only encoder needs no tokenizer
    assert set(build_zoo(zoo["root"], "tiny", log=lambda _: None, steps=STEPS, only=["dinov2"])) == {"dinov2"}
    assert set(build_zoo(zoo["root"], "tiny", log=lambda _: None, steps=STEPS, only=["clip"])) == {"tokenizer", "clip"}
    with pytest.raises(ConfigError):
        build_zoo(zoo["root"], "tiny", steps=STEPS, only=["dinov3"])


def test_the_dinov2_spec_shares_siglips_grid_and_leaves_the_other_keys_alone():
    """The zoo DINOv2 sees SigLIP's 6x6 grid in every size, and adding it (with the spec fields it
    brought) left the cache keys of the artifacts built before it unchanged."""
    from dataclasses import asdict

    from vlmsweep.zoo.spec import content_key, world_identity, zoo_spec

    for size in ("tiny", "small"):
        spec = zoo_spec(size)
        visions = {v.name: v for v in spec.visions}
        dino, siglip = visions["dinov2"], visions["siglip"]
        assert dino.image_size // dino.patch_size == siglip.image_size // siglip.patch_size == 6
        assert dino.hidden == siglip.hidden and dino.self_distill and not dino.uses_text
        (short,) = [v for v in zoo_spec(size, {"dinov2": 7}).visions if v.name == "dinov2"]
        assert short.steps == 7 and short.self_distill == dino.self_distill  # steps override keeps the rest
        world = world_identity(spec)
        new_fields = ("self_distill",)
        for vis in (visions["clip"], siglip):
            old = {k: v for k, v in asdict(vis).items() if k not in new_fields}
            assert content_key("vision", vis, world, "tok") == content_key("vision", old, world, "tok")


@pytest.mark.parametrize("family", ["clip", "siglip", "dinov2"])
def test_center_features_zeroes_the_patch_mean_of_layer_minus_2(family):
    """Folding the mean into the right bias works for each family's layer, including DINOv2's,
    whose MLP output is scaled by LayerScale's lambda before the residual add (here random,
    far from 1, so a shift that forgot to divide by it would fail)."""
    from vlmsweep.models.vision import get_vision_family
    from vlmsweep.zoo.jobs import center_features

    torch.manual_seed(0)
    fam = get_vision_family(family)
    model = fam.model_class(fam.tiny_config()).eval()
    for name, param in model.named_parameters():
        if name.endswith("lambda1"):
            param.data.uniform_(0.2, 3.0)
    side = model.config.image_size
    pixels = torch.randn(40, 3, side, side) + 0.5
    removed = center_features(model, pixels, -2, fam.prefix_tokens)
    with torch.no_grad():
        patches = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, fam.prefix_tokens:]
    assert removed > 0.1 and patches.mean(dim=(0, 1)).norm() < 1e-4 * removed + 1e-5


def test_unknown_zoo_name_lists_built(zoo):
    with pytest.raises(ConfigError) as err:
        load_llm(LLMConfig(family="llama", checkpoint="zoo:unknown"), zoo["presets"])
    (field, msg), = err.value.problems
    assert field == "model.llm.checkpoint"
    assert "vlmsweep zoo build" in msg and "tinyllama" in msg and "siglip" in msg and "unknown" in msg
    with pytest.raises(ConfigError) as err:
        VisionTower(VisionConfig(family="clip", checkpoint="zoo:../zoo/clip"), zoo["presets"])
    assert err.value.problems[0][0] == "model.vision.checkpoint"


def run_mini(root: Path, grid: str, *args: str, sets: list[str]) -> str:
    """`vlmsweep ARGS experiments/mini/GRID` at tiny sizes in the zoo's work dir; its output."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "vlmsweep.cli", args[0], str(Path(__file__).parents[1] / grid),
                          *args[1:], "--work-dir", str(root), *[a for s in sets for a in ("--set", s)]],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


TINY = ["data.synthetic.size=tiny", "data.synthetic.image_size=32", "training.steps=2",
        "stages.finetune.training.steps=2"]


def test_the_llava15_miniature_runs_on_the_zoo(zoo):
    """experiments/mini/llava15.yaml end to end on the zoo's parts at tiny sizes: zoo:clip from its
    penultimate layer into zoo:tinyllama with Vicuna v1's template, unpacked finetune batches."""
    log = run_mini(zoo["root"], "experiments/mini/llava15.yaml", "run",
                   sets=[*TINY, "eval.benchmarks=[pope]", "eval.max_new_tokens=2"])
    assert "sweep LLaVA-1.5-7B: 3 stage(s) run" in log and "LLaVA-1.5-7B: FINISHED" in log
    assert "pope" in log.split("eval of LLaVA-1.5-7B:")[1]


def test_the_dsvl_miniature_runs_on_the_zoo(zoo):
    """experiments/mini/dsvl.yaml, its 30%-text-only variant, at tiny sizes: image delimiters
    around zoo:clip's penultimate-layer features, ln_mlp, the mix applied to the instruct split."""
    log = run_mini(zoo["root"], "experiments/mini/dsvl.yaml", "sweep", "--variant", "DSVL-7B-text0.3",
                   sets=[*TINY, "eval.benchmarks=[]"])
    assert "sweep dsvl-mini: 2 stage(s) run" in log and "DSVL-7B-text0.3: FINISHED" in log
    assert "[projector] text-only mix: kept" in log and "[finetune] text-only mix: kept" in log


def test_the_prismatic_miniature_runs_on_the_zoo(zoo):
    """experiments/mini/prismatic.yaml's fused variant at tiny sizes: zoo:dinov2 and zoo:siglip on
    one 6×6 grid, each through its own processor, concatenated into fused_mlp_gelu, one stage.
    (experiments/mini/encoders.yaml's variants are this run's parts, one encoder at a time, in
    the same one-stage recipe; test_paper_grid.py plans all twelve.)"""
    log = run_mini(zoo["root"], "experiments/mini/prismatic.yaml", "sweep", "--variant",
                   "prism-dinosiglip-controlled+7b", sets=[*TINY, "eval.benchmarks=[pope]", "eval.max_new_tokens=2"])
    assert "sweep prismatic-mini: 2 stage(s) run" in log and "prism-dinosiglip-controlled+7b: FINISHED" in log


def _probe_vision():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "probe_vision.py"
    spec = importlib.util.spec_from_file_location("probe_vision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vision_probe_reads_every_vision_part(zoo, capsys):
    """bench/probe_vision.py: a row per vision part, its random twin and each grid's pixels; the
    raw pixels carry colour far above the majority class (what the probe is calibrated on)."""
    assert _probe_vision().main(["--work-dir", str(zoo["root"]), "--scenes", "80"]) == 0
    rows = {line.split(" | ")[0].strip("| "): line.strip(" |").split(" | ")[1:]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    for name in VISIONS:
        assert name in rows and f"{name} (random)" in rows
        assert rows[name][:2] == [str(VISIONS[name][2]), str(zoo["built"][name]["spec"]["hidden"])]
    assert {"pixels (4x4 grid)", "pixels (6x6 grid)"} <= set(rows)  # clip's grid; siglip's and dinov2's
    majority = float(rows["majority class"][2])
    assert float(rows["pixels (6x6 grid)"][2]) > majority + 0.3


def test_vision_probe_without_a_zoo_says_what_to_run(tmp_path, capsys):
    assert _probe_vision().main(["--work-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "vlmsweep zoo build" in err


def test_vision_probe_refuses_a_layer_the_encoders_lack(zoo, capsys):
    assert _probe_vision().main(["--work-dir", str(zoo["root"]), "--scenes", "10", "--layer", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: model.vision.feature_layer: 9 is outside an encoder of 4 layers (allowed: 1..4 or -4..-1)"]
