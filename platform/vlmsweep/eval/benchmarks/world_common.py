"""What every benchmark's world builder shares: sizes and counts, the per-item RNG, the scene
each item is drawn from (`SCENES`, and `bench_scene` to regenerate it), scene helpers, and
the writing of a benchmark folder in its official layout.

Every image comes from a scene drawn by its own `random.Random(f"{seed}/bench/<unit>/{i}")`:
training uses other split names ("scene", "instruct"), so benchmark images are new scenes,
and `bench_scene` regenerates the scene behind any item (tests re-derive every answer from
it). Items depend only on (seed, index, image_size), except POPE's popular/adversarial
negatives, which are chosen from statistics over the whole set.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from vlmsweep.data.world import questions as Q
from vlmsweep.data.world.build import WORLD_SIZES
from vlmsweep.data.world.language import reference
from vlmsweep.data.world.scenes import COLOURS, KINDS, WORD_PROB, Scene, object_limit, render_png, sample_scene

SCALE = {"tiny": 1, "small": 5, "medium": 25}
assert set(SCALE) == set(WORLD_SIZES)
# Images per benchmark at tiny (x SCALE), and questions per image where more than one.
TINY_IMAGES = {"vqav2": 16, "gqa": 16, "textvqa": 50, "scienceqa": 50, "pope": 5, "mmmu": 50}
VQA_PER_IMAGE = GQA_PER_IMAGE = 3
POPE_PER_IMAGE = 3  # yes questions per image (and as many no questions) in every split
MME_SUBTASKS = ("existence", "count", "position", "color", "OCR", "commonsense_reasoning",
                "numerical_calculation")
MME_TINY_IMAGES = 4  # per subtask; each image has one Yes and one No question
SQA_IMAGE_PROB = 0.8
LETTERS = "ABCD"


def _rng(seed: int, unit: str, index: int) -> random.Random:
    # Same construction as build._rng; "bench/..." never collides with a training split.
    return random.Random(f"{seed}/bench/{unit}/{index}")


# ---- scenes ----------------------------------------------------------------------------

def _scene(rng: random.Random, image_size: int, *, min_objects: int = 1,
           word: bool | None = None) -> Scene:
    has_word = rng.random() < WORD_PROB if word is None else word
    limit = object_limit(image_size, has_word)
    n = rng.randint(min(min_objects, limit), limit)
    return sample_scene(rng, image_size, n_objects=n, word=has_word)


def _col(o) -> int:
    return 0 if "left" in o.position else 2 if "right" in o.position else 1


def _row(o) -> int:
    return 0 if o.position.startswith("top") else 2 if o.position.startswith("bottom") else 1


def _anchors(scene: Scene) -> list[tuple]:
    """(object, reference) for objects nameable without their position."""
    return [(o, r) for o in scene.objects if (r := reference(scene, o, avoid="position"))]


def _position_pairs(scene: Scene) -> list[tuple]:
    """(a, ref_a, b, ref_b, axis) for nameable objects in different columns / rows."""
    out = []
    anchors = _anchors(scene)
    for i, (a, ra) in enumerate(anchors):
        for b, rb in anchors[i + 1:]:
            if _col(a) != _col(b):
                out.append((a, ra, b, rb, "x"))
            if _row(a) != _row(b):
                out.append((a, ra, b, rb, "y"))
    return out


def unambiguous_position(scene: Scene, obj) -> bool:
    """Whether "at the top" etc. names obj alone under either reading: the grid cell, or
    the whole top row / left column. Corners and the centre always do."""
    if obj.position in ("top", "bottom"):
        return sum(_row(o) == _row(obj) for o in scene.objects) == 1
    if obj.position in ("left", "right"):
        return sum(_col(o) == _col(obj) for o in scene.objects) == 1
    return True


def _shape_at(scene: Scene, rng: random.Random) -> Q.QA | None:
    """Q.q_shape_at, asked only about positions that can't be misread (see above). Some
    object always qualifies: with no corner or centre taken, each edge cell is alone in
    its row / column."""
    objs = [o for o in scene.objects if unambiguous_position(scene, o)]
    if not objs:
        return None
    return Q.q_shape_at(replace(scene, objects=(rng.choice(objs),)), rng)


def _pairs(scene: Scene) -> list[tuple[str, str]]:
    """Distinct (colour, kind) pairs present, in reading order."""
    return list(dict.fromkeys((o.colour, o.kind) for o in scene.objects))


ALL_PAIRS = [(c, k) for c in COLOURS for k in KINDS]  # every (colour, kind) a scene can have


def _until(rng: random.Random, make: Callable[[], Scene], ok: Callable[[Scene], bool]) -> Scene:
    for _ in range(1000):
        scene = make()
        if ok(scene):
            return scene
    raise RuntimeError("could not draw a scene with the required property")


def _sqa_scene(rng: random.Random, s: int) -> Scene | None:
    return _scene(rng, s) if rng.random() < SQA_IMAGE_PROB else None


SCENES: dict[str, Callable[[random.Random, int], Scene | None]] = {
    "vqav2": lambda rng, s: _scene(rng, s),
    "gqa": lambda rng, s: _scene(rng, s, min_objects=3),
    "textvqa": lambda rng, s: _scene(rng, s, word=True),
    "scienceqa": _sqa_scene,
    "pope": lambda rng, s: _until(rng, lambda: _scene(rng, s, min_objects=3),
                                  lambda sc: len(_pairs(sc)) >= POPE_PER_IMAGE),
    "mmmu": lambda rng, s: _scene(rng, s, min_objects=3),
    "mme/existence": lambda rng, s: _scene(rng, s),
    "mme/count": lambda rng, s: _scene(rng, s),
    "mme/position": lambda rng, s: _until(rng, lambda: _scene(rng, s, min_objects=2),
                                          lambda sc: bool(_position_pairs(sc))),
    "mme/color": lambda rng, s: _scene(rng, s),
    "mme/OCR": lambda rng, s: _scene(rng, s, word=True),
    "mme/commonsense_reasoning": lambda rng, s: _scene(rng, s),
    "mme/numerical_calculation": lambda rng, s: _scene(rng, s),
}


def start(seed: int, unit: str, index: int, image_size: int) -> tuple[random.Random, Scene | None]:
    rng = _rng(seed, unit, index)
    return rng, SCENES[unit](rng, image_size)


def bench_scene(seed: int, unit: str, index: int, image_size: int) -> Scene | None:
    """The scene behind image `index` of `unit` (a benchmark, or 'mme/<subtask>');
    None for a text-only ScienceQA item."""
    return start(seed, unit, index, image_size)[1]


# ---- writing ---------------------------------------------------------------------------

def dump_json(path: Path, obj, indent: int | None = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=indent) + "\n")


def dump_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


class WorldSet:
    """One benchmark folder being written in its official layout: images, then its files."""

    def __init__(self, root: Path, folder: str):
        self.dir = root / folder
        shutil.rmtree(self.dir, ignore_errors=True)  # no stale files from a bigger build
        self.dir.mkdir(parents=True)
        self.images = 0

    def image(self, rel: str, scene: Scene) -> None:
        """PNG bytes at `rel`, even where the official name ends .jpg (COCO, GQA): readers open
        images by content, and the pixels stay exactly the ones the scene renders."""
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render_png(scene))
        self.images += 1

    def finish(self, questions: int, files: dict, **extra) -> dict:
        return {"dir": self.dir.name, "questions": questions, "images": self.images, "files": files, **extra}


def each_image(name: str, seed: int, scale: int, image_size: int) -> Iterator[tuple[int, random.Random, Scene]]:
    """(index, rng, scene) for each of the benchmark's TINY_IMAGES x scale images; the rng is
    the one the scene was drawn from, left for the item's questions."""
    for i in range(TINY_IMAGES[name] * scale):
        rng, scene = start(seed, name, i, image_size)
        yield i, rng, scene


def _mc(rng: random.Random, answer: str, distractors, n: int) -> tuple[list[str], int]:
    """n options (answer + n-1 distinct distractors), shuffled; returns (options, index)."""
    pool = sorted(dict.fromkeys(d for d in distractors if d != answer))
    options = rng.sample(pool, min(n - 1, len(pool))) + [answer]
    rng.shuffle(options)
    return options, options.index(answer)


def human_answers(rng: random.Random, answer: str, variants: list[str], wrong: list[str]) -> list[dict]:
    """Ten annotator answers (VQAv2's records): 6-10 exactly the answer (always the majority),
    the rest equivalent variants ('two', '2 circles', 'Red') and at most two wrong ones."""
    n_exact = rng.randint(6, 10)
    n_wrong = rng.randint(0, min(2, 10 - n_exact)) if wrong else 0
    pool = [answer] * n_exact + [rng.choice(wrong) for _ in range(n_wrong)]
    pool += [rng.choice(variants) if variants else answer for _ in range(10 - len(pool))]
    rng.shuffle(pool)
    return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(pool)]


def _near_numbers(n: int) -> list[str]:
    return [str(k) for k in range(max(0, n - 3), n + 4) if k != n]
