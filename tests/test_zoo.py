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
VISIONS = {"clip": ("clip", "CLIPVisionModel", 16), "siglip": ("siglip", "SiglipVisionModel", 36)}


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
    for name in (*LMS, *VISIONS):
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
        patches[name] = n_patches
    assert patches["siglip"] > patches["clip"]


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
