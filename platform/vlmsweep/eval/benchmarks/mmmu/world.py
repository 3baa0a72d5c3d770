"""The world's MMMU set: four-option multiple choice with MMMU's subjects and subfields,
written as the official validation parquet files (<Subject>/validation-00000-of-00001.parquet,
the image's PNG bytes inside)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from vlmsweep.data.world import questions as Q
from vlmsweep.data.world.language import counts, reference
from vlmsweep.data.world.scenes import COLOURS, KINDS, Scene, render_png

from ..world_common import LETTERS, WorldSet, _mc, _near_numbers, each_image
from .layout import MAX_IMAGES


def _m_most_common(scene: Scene, rng: random.Random):
    c = Counter(o.kind for o in scene.objects).most_common()
    if len(c) > 1 and c[0][1] == c[1][1]:
        return None
    return ("Which shape appears most often in the image?", c[0][0], list(KINDS),
            "Math", "Statistics")


def _m_sides_total(scene: Scene, rng: random.Random):
    kinds = [k for k in ("triangle", "square") if counts(scene, kind=k)]
    if not kinds:
        return None
    total = sum(Q.SIDES[o.kind] for o in scene.objects if o.kind in ("triangle", "square"))
    return ("How many sides do all the triangles and squares in the image have altogether?",
            str(total), _near_numbers(total), "Math", "Geometry")


def _m_mix(scene: Scene, rng: random.Random):
    partners = {}
    for (x, y), z in Q.MIXES.items():
        partners.setdefault(x, []).append((y, z))
        partners.setdefault(y, []).append((x, z))
    objs = [o for o in scene.objects if o.colour in partners]
    if not objs:
        return None
    obj = rng.choice(objs)
    other, result = rng.choice(sorted(partners[obj.colour]))
    ref = reference(scene, obj, avoid="colour")
    return (f"Which colour do you get by mixing paint of the colour of {ref} with {other} paint?",
            result, list(COLOURS), "Art", "Color Theory")


def _m_empty_cell(scene: Scene, rng: random.Random):
    rows = 2 if scene.word else 3  # the word covers the bottom row
    names = [" ".join(p for p in (r, c) if p) or "centre"
             for r in ("top", "", "bottom")[:rows] for c in ("left", "", "right")]
    used = {o.position for o in scene.objects}
    empty = [p for p in names if p not in used]
    taken = [p for p in names if p in used]
    if not empty or len(taken) < 3:
        return None
    return ("Which position in the image has no shape?", rng.choice(empty), taken,
            "Design", "Layout")


def _m_not_colour(scene: Scene, rng: random.Random):
    colour = rng.choice(sorted({o.colour for o in scene.objects}))
    n = len(scene.objects) - counts(scene, colour=colour)
    return (f"How many objects in the image are not {colour}?", str(n), _near_numbers(n),
            "Math", "Arithmetic")


def _m_sides_of(scene: Scene, rng: random.Random):
    objs = [o for o in scene.objects if o.kind in Q.SIDES]
    if not objs:
        return None
    obj = rng.choice(objs)
    return (f"How many sides does {reference(scene, obj)} have?", str(Q.SIDES[obj.kind]),
            [str(k) for k in range(2, 9)], "Math", "Geometry")


MMMU_GENERATORS = (_m_most_common, _m_sides_total, _m_mix, _m_empty_cell, _m_not_colour, _m_sides_of)


def _table(rows: list[dict]):
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [("id", pa.string()), ("question", pa.string()), ("options", pa.string()), ("explanation", pa.string()),
              *[(f"image_{k}", image) for k in range(1, MAX_IMAGES + 1)], ("img_type", pa.string()),
              ("answer", pa.string()), ("topic_difficulty", pa.string()), ("question_type", pa.string()),
              ("subfield", pa.string())]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def build(root: Path, seed: int, scale: int, image_size: int) -> dict:
    import pyarrow.parquet as pq

    out = WorldSet(root, "MMMU")
    by_subject: dict[str, list[dict]] = {}
    for i, rng, scene in each_image("mmmu", seed, scale, image_size):
        for gen in rng.sample(MMMU_GENERATORS, len(MMMU_GENERATORS)):
            made = gen(scene, rng)
            if made is not None:
                break
        question, answer, distractors, subject, subfield = made  # _m_not_colour always applies
        options, idx = _mc(rng, answer, distractors, 4)
        assert len(options) == 4
        mid = f"validation_{subject}_{i + 1}"
        record = {"id": mid, "question": question, "options": repr(options), "explanation": "",
                  "image_1": {"bytes": render_png(scene), "path": f"{mid}_1.png"},
                  **{f"image_{k}": None for k in range(2, MAX_IMAGES + 1)}, "img_type": "['Diagrams']",
                  "answer": LETTERS[idx], "topic_difficulty": "Easy", "question_type": "multiple-choice",
                  "subfield": subfield}
        by_subject.setdefault(subject, []).append(record)
        out.images += 1
    files = {}
    for subject, rows in sorted(by_subject.items()):
        rel = f"{subject}/validation-00000-of-00001.parquet"
        (out.dir / subject).mkdir()
        pq.write_table(_table(rows), out.dir / rel)
        files[subject] = rel
    return out.finish(sum(map(len, by_subject.values())), {"validation": files})
