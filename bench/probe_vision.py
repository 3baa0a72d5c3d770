"""What a vision encoder's patch features carry: linear probes on the world's scenes.

For every object of some held-out scenes, the probe takes the one patch token the connector
would receive at the object's centre (the VLM's own feature layer, processor and aspect rule:
models.vision.VisionTower) and fits a linear classifier for the object's colour, shape and
size. Scenes, not objects, are split 80/20, so no scene is both fitted and scored.

Two references sit beside the pretrained zoo parts:
- "pixels": the same patch's raw pixels, the input of the encoder's patch embedding. What a
  linear probe finds there, the encoder had and a linear connector could have kept.
- "<part> (random)": the zoo part's architecture and grid with random weights. What the zoo
  part adds over it is what pretraining taught.

It answers "does the connector get the attribute at all?" before a VLM is trained on it: a
benchmark that needs an attribute the features don't carry stays at chance however long the
LLM trains (the demo's POPE, README "Demo").

    .venv/bin/python bench/probe_vision.py --work-dir /tmp/w    # after `vlmsweep zoo build`
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from vlmsweep.config.errors import ConfigError
from vlmsweep.config.schema import VisionConfig
from vlmsweep.data.world.scenes import COLOURS, KINDS, SIZES, render, sample_scene
from vlmsweep.models.vision import ImagePipeline, VisionTower, get_vision_family
from vlmsweep.zoo.build import read_info

ATTRIBUTES = {"colour": list(COLOURS), "shape": list(KINDS), "size": list(SIZES)}
WORLD_PX = 64  # the world's image size the VLMs train on (data.synthetic.image_size)


def held_out_scenes(n: int) -> list:
    # its own RNG name: no training split or benchmark draws these scenes
    rng = random.Random("probe_vision/scenes")
    return [sample_scene(rng, WORLD_PX) for _ in range(n)]


def centre_cell(obj, grid: int) -> int:
    """The row-major index of the grid cell holding the object's centre."""
    col = min(grid - 1, int(obj.x / WORLD_PX * grid))
    row = min(grid - 1, int(obj.y / WORLD_PX * grid))
    return row * grid + col


def patch_rows(tokens: torch.Tensor, scenes: list) -> tuple[np.ndarray, list]:
    """(one feature row per object, its scene index) from [n_scenes, grid², dim] tokens."""
    grid = int(round(tokens.shape[1] ** 0.5))
    if grid * grid != tokens.shape[1]:
        raise ValueError(f"{tokens.shape[1]} tokens are not a square grid")
    rows, owner = [], []
    for i, (scene, t) in enumerate(zip(scenes, tokens)):
        for obj in scene.objects:
            rows.append(t[centre_cell(obj, grid)].numpy())
            owner.append(i)
    return np.asarray(rows, dtype=np.float32), owner


def encoder_rows(cfg: VisionConfig, preset_root: Path, scenes: list, batch: int = 100):
    tower, pipeline = VisionTower(cfg, preset_root).eval(), ImagePipeline.load(cfg, preset_root)
    chunks = []
    with torch.no_grad():
        for s in range(0, len(scenes), batch):
            pixels = torch.from_numpy(pipeline([render(sc) for sc in scenes[s:s + batch]]))
            chunks.append(tower(pixels))
    tokens = torch.cat(chunks)
    return patch_rows(tokens, scenes), tokens.shape[1]


def pixel_rows(cfg: VisionConfig, preset_root: Path, scenes: list, patch: int):
    """Each patch's raw processed pixels, cut on the encoder's own grid."""
    pipeline = ImagePipeline.load(cfg, preset_root)
    pixels = torch.from_numpy(pipeline([render(sc) for sc in scenes]))  # [n, 3, H, W]
    n, c, h, w = pixels.shape
    grid = h // patch
    tokens = pixels.unfold(2, patch, patch).unfold(3, patch, patch)     # [n, c, g, g, p, p]
    tokens = tokens.permute(0, 2, 3, 1, 4, 5).reshape(n, grid * grid, c * patch * patch)
    return patch_rows(tokens, scenes), grid * grid


def random_copy(part: Path, out: Path, family: str) -> Path:
    """The part's architecture, grid and processor with fresh random weights, saved in `out`."""
    from transformers import AutoConfig, AutoImageProcessor

    torch.manual_seed(0)
    model = get_vision_family(family).model_class(AutoConfig.from_pretrained(part))
    model.save_pretrained(out)
    AutoImageProcessor.from_pretrained(part).save_pretrained(out)
    return out


def probe_accuracy(x: np.ndarray, y: np.ndarray, owner: list, seed: int = 0, hidden: int = 0) -> float:
    """Held-out accuracy of a multinomial logistic regression, or with `hidden` > 0 of a one-hidden-
    layer GELU MLP (what an mlp2x_gelu connector could compute from one token). Full-batch Adam;
    the features are standardised on the fitting scenes."""
    owner = np.asarray(owner)
    fit = owner < int(0.8 * (owner.max() + 1))
    xt = torch.from_numpy(x)
    mean, std = xt[fit].mean(0), xt[fit].std(0) + 1e-6
    xt = (xt - mean) / std
    yt = torch.from_numpy(y)
    torch.manual_seed(seed)
    classes = int(y.max()) + 1
    nn = torch.nn
    probe = nn.Sequential(nn.Linear(xt.shape[1], hidden), nn.GELU(), nn.Linear(hidden, classes)) if hidden \
        else nn.Linear(xt.shape[1], classes)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-3 if hidden else 1e-2, weight_decay=1e-4)
    for _ in range(1500 if hidden else 500):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(probe(xt[fit]), yt[fit]).backward()
        opt.step()
    with torch.no_grad():
        return float((probe(xt[~fit]).argmax(1) == yt[~fit]).float().mean())


def labels(scenes: list) -> dict[str, np.ndarray]:
    objs = [o for sc in scenes for o in sc.objects]
    return {"colour": np.array([ATTRIBUTES["colour"].index(o.colour) for o in objs]),
            "shape": np.array([ATTRIBUTES["shape"].index(o.kind) for o in objs]),
            "size": np.array([ATTRIBUTES["size"].index(o.size) for o in objs])}


def zoo_visions(zoo: Path) -> list[tuple[str, str]]:
    """(name, family) of each built vision part."""
    out = []
    for d in sorted(p for p in zoo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        info = read_info(d)
        if info and info.get("kind") == "vision":
            out.append((d.name, info["family"]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", required=True, type=Path, help="a work dir whose zoo/ holds built vision parts")
    ap.add_argument("--scenes", type=int, default=1500, help="held-out scenes (about 3.6 objects each)")
    ap.add_argument("--layer", type=int, default=-2, help="the feature layer (the VLMs' default: -2)")
    ap.add_argument("--mlp", action="store_true", help="also an MLP probe per attribute (256 hidden; ~3x slower)")
    args = ap.parse_args(argv)
    zoo, presets = args.work_dir / "zoo", args.work_dir / "presets"
    parts = zoo_visions(zoo) if zoo.is_dir() else []
    if not parts:
        print(f"error: no built vision part in {zoo}: run `vlmsweep zoo build --work-dir {args.work_dir}`",
              file=sys.stderr)
        return 2
    if args.scenes < 10:
        print(f"error: --scenes must be at least 10 (2 scored for each 8 fitted), got {args.scenes}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # two bars per part on stderr; the table is the output
    scenes = held_out_scenes(args.scenes)
    y = labels(scenes)
    majority = {a: np.bincount(v).max() / len(v) for a, v in y.items()}
    probes = {"linear": 0, "MLP": 256} if args.mlp else {"linear": 0}
    print(f"{len(scenes)} scenes, {len(y['colour'])} objects; a {' and an '.join(probes)} probe per attribute on "
          f"the patch token at each object's centre (feature layer {args.layer}); scored on the last 20% of scenes")
    columns = [f"{a} ({p})" if args.mlp else a for p in probes for a in ATTRIBUTES]
    print("| features | tokens | dim | " + " | ".join(columns) + " |")
    print("|---|---:|---:|" + "---:|" * len(columns))
    print("| majority class | | | " + " | ".join(f"{majority[a]:.2f}" for _ in probes for a in ATTRIBUTES) + " |")
    try:
        _print_rows(zoo, presets, parts, scenes, y, probes, args.layer)
    except ConfigError as err:  # e.g. a --layer the encoder doesn't have
        field, message = err.problems[0]
        print(f"error: {field}: {message}", file=sys.stderr)
        return 2
    return 0


def _print_rows(zoo: Path, presets: Path, parts, scenes, y, probes: dict, layer: int) -> None:
    grids = set()
    with tempfile.TemporaryDirectory() as tmp:
        for name, family in parts:
            spec = read_info(zoo / name)["spec"]
            rows = []
            if (spec["image_size"], spec["patch_size"]) not in grids:  # pixels once per grid
                grids.add((spec["image_size"], spec["patch_size"]))
                cfg = VisionConfig(family=family, checkpoint=f"zoo:{name}", feature_layer=layer)
                grid = spec["image_size"] // spec["patch_size"]
                rows.append((f"pixels ({grid}x{grid} grid)", pixel_rows(cfg, presets, scenes, spec["patch_size"])))
            random_dir = random_copy(zoo / name, Path(tmp) / name, family)
            for label, checkpoint in ((name, f"zoo:{name}"), (f"{name} (random)", str(random_dir))):
                cfg = VisionConfig(family=family, checkpoint=checkpoint, feature_layer=layer)
                rows.append((label, encoder_rows(cfg, presets, scenes)))
            for label, ((x, owner), tokens) in rows:
                accs = [probe_accuracy(x, y[a], owner, hidden=h) for h in probes.values() for a in ATTRIBUTES]
                print(f"| {label} | {tokens} | {x.shape[1]} | " + " | ".join(f"{v:.2f}" for v in accs) + " |",
                      flush=True)


if __name__ == "__main__":
    sys.exit(main())
