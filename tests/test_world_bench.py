"""The world's held-out benchmark sets: official layouts, determinism, disjointness from
training images, and answers re-derived from the scenes.

Answers are checked by parsing each question here and deriving the answer from the
regenerated scene, using object coordinates for grid cells and relations, independently
of the benchmark module's own derivations.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from vlmsweep.config.schema import DataConfig
from vlmsweep.config.workdir import WorkDir
from vlmsweep.data.shards import iter_samples
from vlmsweep.data.world import build_world
from vlmsweep.data.world.scenes import COLOURS, KINDS, WORDS, Obj, Scene
from vlmsweep.eval.benchmarks import BENCHMARKS, WORLD_BENCHMARKS
from vlmsweep.eval.benchmarks.pope.layout import SPLITS as POPE_SPLITS
from vlmsweep.eval.benchmarks.world_common import MME_SUBTASKS, bench_scene
from vlmsweep.eval.world_sets import BENCH_DIR, build_benchmarks, ensure_world_benchmarks

SPLITS = ("captions_short", "captions_detailed", "instruct", "instruct_detailed")
PLURAL_TO_KIND = {("crosses" if k == "cross" else k + "s"): k for k in KINDS}
NUM = {w: i for i, w in enumerate("no one two three four five six seven eight nine".split())}
MIXES = {frozenset(("red", "blue")): "purple", frozenset(("red", "yellow")): "orange",
         frozenset(("blue", "yellow")): "green", frozenset(("black", "white")): "gray"}
SIDES = {"triangle": 3, "square": 4, "diamond": 4}
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top",
            "small": "large", "large": "small"}
SIZE_ORDER = ["small", "medium", "large"]
CELLS = {"top left": (0, 0), "top": (0, 1), "top right": (0, 2), "left": (1, 0),
         "centre": (1, 1), "right": (1, 2), "bottom left": (2, 0), "bottom": (2, 1),
         "bottom right": (2, 2)}
SINGLE = "\nAnswer the question using a single word or phrase."


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    summary = build_world(out, seed=0, size="tiny", image_size=64)
    bench = build_benchmarks(out / BENCH_DIR, seed=0, size="tiny", image_size=64)
    return out, summary, bench


# Extra builds (seed, image_size) so answers are checked at other sizes too.
@pytest.fixture(scope="module", params=[(0, 64), (3, 32), (7, 160)], ids=lambda p: f"seed{p[0]}-px{p[1]}")
def bench(request, world, tmp_path_factory):
    seed, px = request.param
    if (seed, px) == (0, 64):
        return world[0] / BENCH_DIR, seed, px
    out = tmp_path_factory.mktemp(f"bench{seed}")
    build_benchmarks(out, seed=seed, size="tiny", image_size=px)
    return out, seed, px


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _json(path: Path):
    return json.loads(path.read_text())


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _index(name: str) -> int:
    """The scene index in an image or id name: '00012.png', 'COCO_val2014_000000000012.jpg', '0012'."""
    return int(re.findall(r"\d+", Path(name).stem)[-1])


def _mmmu_records(root: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for f in sorted((root / "MMMU").glob("*/validation-*.parquet")) for r in pq.read_table(f).to_pylist()]


# ---- build, determinism, disjointness --------------------------------------------------

def test_summary_matches_files_and_the_registry(world):
    out, summary, built = world
    root = out / BENCH_DIR
    on_disk = _json(root / "benchmarks.json")
    assert built == on_disk and "benchmarks" not in summary  # the world itself writes training splits only
    assert (on_disk["seed"], on_disk["size"], on_disk["image_size"]) == (0, "tiny", 64)
    assert tuple(on_disk["benchmarks"]) == WORLD_BENCHMARKS == tuple(n for n in BENCHMARKS if n != "mmvet")
    for name, info in on_disk["benchmarks"].items():
        d = root / info["dir"]
        assert BENCHMARKS[name].folder(root) == d
        assert len(BENCHMARKS[name].load_items(d)) == info["questions"]
        for f in info["files"].values():
            for path in (f.values() if isinstance(f, dict) else [f]):
                assert (d / path).exists(), (name, path)
    counts = {n: i["questions"] for n, i in on_disk["benchmarks"].items()}
    assert all(40 <= counts[n] <= 60 for n in ("vqav2", "gqa", "textvqa", "scienceqa", "mme", "mmmu"))
    assert on_disk["benchmarks"]["pope"]["splits"] == {s: 30 for s in POPE_SPLITS}


def test_ensure_world_benchmarks_builds_once_under_the_world(tmp_path):
    work, data = WorkDir.at(tmp_path / "work"), DataConfig(synthetic={"size": "tiny", "image_size": 32})
    root = Path(ensure_world_benchmarks(data, work))
    assert root.name == BENCH_DIR and root.parent.name.startswith("world-v")
    stamp = (root / "benchmarks.json").stat().st_mtime_ns
    assert Path(ensure_world_benchmarks(data, work)) == root and (root / "benchmarks.json").stat().st_mtime_ns == stamp


def test_deterministic_and_seeded(world, tmp_path):
    a = build_benchmarks(tmp_path / "a", seed=0, size="tiny", image_size=64)
    b = build_benchmarks(tmp_path / "b", seed=0, size="tiny", image_size=64)
    assert a == b
    tree = _tree(tmp_path / "a")
    assert tree == _tree(tmp_path / "b") == _tree(world[0] / BENCH_DIR)
    build_benchmarks(tmp_path / "c", seed=1, size="tiny", image_size=64)
    other = _tree(tmp_path / "c")
    pngs = {h for p, h in tree.items() if p.endswith((".png", ".jpg"))}
    assert not pngs & {h for p, h in other.items() if p.endswith((".png", ".jpg"))}
    # Rebuilding over an existing dir leaves no stale files behind.
    build_benchmarks(tmp_path / "a", seed=0, size="small", image_size=64)
    build_benchmarks(tmp_path / "a", seed=0, size="tiny", image_size=64)
    assert _tree(tmp_path / "a") == tree


def test_tiny_build_time(tmp_path):
    build_benchmarks(tmp_path / "warm", seed=5, size="tiny", image_size=64)  # fonts, imports
    t = time.perf_counter()
    build_benchmarks(tmp_path / "b", seed=0, size="tiny", image_size=64)
    assert time.perf_counter() - t < 3.0


def test_sizes_scale(tmp_path):
    tiny = build_benchmarks(tmp_path / "t", seed=0, size="tiny", image_size=32)["benchmarks"]
    small = build_benchmarks(tmp_path / "s", seed=0, size="small", image_size=32)["benchmarks"]
    for name in WORLD_BENCHMARKS:
        assert small[name]["images"] == 5 * tiny[name]["images"] or name == "scienceqa"
        assert 4 * tiny[name]["questions"] <= small[name]["questions"] <= 6 * tiny[name]["questions"]


def test_images_disjoint_from_training(world):
    out, _, _ = world
    train = set()
    for split in SPLITS:
        for s in iter_samples(out / split):
            train.update(hashlib.sha256(png).hexdigest() for png in s["images"])
    for p in (out / "llava").rglob("*.png") if (out / "llava").exists() else ():
        train.add(hashlib.sha256(p.read_bytes()).hexdigest())
    assert len(train) > 300
    root = out / BENCH_DIR
    files = [p.read_bytes() for p in root.rglob("*") if p.suffix in (".png", ".jpg")]
    files += [r["image_1"]["bytes"] for r in _mmmu_records(root)]
    bench = {}
    for data in files:
        img = Image.open(io.BytesIO(data))
        assert img.format == "PNG" and img.size == (64, 64) and img.mode == "RGB"
        bench[hashlib.sha256(data).hexdigest()] = data
    assert len(bench) > 150
    assert not set(bench) & train


# ---- official layouts ------------------------------------------------------------------

def test_vqav2_val_layout(bench):
    root = bench[0] / "vqav2"
    questions = _json(root / "v2_OpenEnded_mscoco_val2014_questions.json")["questions"]
    anns = _json(root / "v2_mscoco_val2014_annotations.json")["annotations"]
    assert [a["question_id"] for a in anns] == [q["question_id"] for q in questions]
    types = Counter()
    for q, a in zip(questions, anns):
        assert isinstance(q["question_id"], int) and q["image_id"] == a["image_id"]
        assert (root / f"val2014/COCO_val2014_{q['image_id']:012d}.jpg").is_file()
        answers = [x["answer"] for x in a["answers"]]
        assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
        top, n = Counter(answers).most_common(1)[0]
        assert top == a["multiple_choice_answer"] and n >= 6
        assert a["answer_type"] in ("yes/no", "number", "other")
        if a["answer_type"] == "yes/no":
            assert a["multiple_choice_answer"] in ("yes", "no")
        if a["answer_type"] == "number":
            assert a["multiple_choice_answer"].isdigit()
        types[a["answer_type"]] += 1
    assert set(types) == {"yes/no", "number", "other"}
    assert any(len(set(x["answer"] for x in a["answers"])) > 1 for a in anns)  # some variety


def test_gqa_layout(bench):
    root = bench[0] / "gqa"
    rows = _jsonl(root / "llava_gqa_testdev_balanced.jsonl")
    anns = _json(root / "data" / "testdev_balanced_questions.json")
    assert list(anns) == [r["question_id"] for r in rows]
    for r in rows:
        a = anns[r["question_id"]]
        assert isinstance(r["question_id"], str) and r["text"] == a["question"] + SINGLE
        assert (root / "data" / "images" / r["image"]).is_file()
        assert re.fullmatch(r"[a-z]+", a["answer"]), a
        assert {"structural", "semantic", "detailed"} <= set(a["types"]) and a["isBalanced"] is True
        # what GQA's eval.py reads: every question's semantic steps, a global group for its query ones
        assert a["semantic"] == [] and (a["groups"]["global"] is not None) == (a["types"]["structural"] == "query")
    assert sum(a["types"]["semantic"] == "rel" for a in anns.values()) >= len(anns) / 3


def test_textvqa_layout(bench):
    root = bench[0] / "textvqa"
    rows = _jsonl(root / "llava_textvqa_val_v051_ocr.jsonl")
    data = _json(root / "TextVQA_0.5.1_val.json")
    assert data["dataset_version"] == "0.5.1" and len(rows) == len(data["data"])
    for r, d in zip(rows, data["data"]):
        assert r["question_id"] == d["image_id"] and r["image"] == f"{d['image_id']}.png"  # LLaVA: the image id
        question, ocr, prompt = r["text"].split("\n")
        assert question == d["question"] and ocr.startswith("Reference OCR token: ") and "\n" + prompt == SINGLE
        assert (root / "train_images" / r["image"]).is_file()
        assert len(d["answers"]) == 10 and all(isinstance(a, str) for a in d["answers"])


def test_scienceqa_layout(bench):
    root = bench[0] / "scienceqa"
    records = _json(root / "llava_test_CQM-A.json")
    problems = _json(root / "problems.json")
    assert _json(root / "pid_splits.json")["test"] == list(problems) == [r["id"] for r in records]
    for r in records:
        p = problems[r["id"]]
        assert 2 <= len(p["choices"]) <= 4 and len(set(p["choices"])) == len(p["choices"])
        assert isinstance(p["answer"], int) and 0 <= p["answer"] < len(p["choices"])
        assert p["split"] == "test" and isinstance(p["hint"], str) and p["subject"]
        assert (p["image"] == "image.png") == ("image" in r)
        options = "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(p["choices"]))
        context = f"Context: {p['hint']}\n" if p["hint"] else ""
        human = r["conversations"][0]["value"]
        if "image" in r:
            assert r["image"] == f"{r['id']}/image.png" and (root / "images/test" / r["image"]).is_file()
            assert human.startswith("<image>\n")
        assert human.removeprefix("<image>\n") == f"{context}{p['question']}\n{options}"
    with_image = sum(p["image"] is not None for p in problems.values())
    assert len(problems) / 2 < with_image < len(problems)  # mostly image questions, a few not
    assert len(Counter(p["answer"] for p in problems.values())) >= 3  # the answer moves around


def test_pope_layout_and_balance(bench):
    root = bench[0] / "pope"
    rows = _jsonl(root / "llava_pope_test.jsonl")
    assert [r["category"] for r in rows] == [s for s in POPE_SPLITS for _ in range(30)]
    assert len({r["question_id"] for r in rows}) == len(rows)
    for split in POPE_SPLITS:
        labels = _jsonl(root / "coco" / f"coco_pope_{split}.json")
        mine = [r for r in rows if r["category"] == split]
        assert [a["image"] for a in labels] == [r["image"] for r in mine]
        assert [a["text"] + SINGLE for a in labels] == [r["text"] for r in mine]
        assert Counter(a["label"] for a in labels) == {"yes": 15, "no": 15}, split
        per_image = defaultdict(Counter)
        for a in labels:
            per_image[a["image"]][a["label"]] += 1
            assert (root / "val2014" / a["image"]).is_file()
        assert all(c["yes"] == c["no"] for c in per_image.values())


def _mme_release(root: Path) -> list[tuple[str, str, str, str]]:
    """(subtask, image, question, answer) for every line of the release's .txt files."""
    out = []
    for txt in sorted((root / "MME" / "MME_Benchmark_release_version").glob("*/*.txt")):
        for line in txt.read_text().splitlines():
            q, a = line.split("\t")
            out.append((txt.parent.name, f"{txt.parent.name}/{txt.stem}.png", q, a))
    return out


def test_mme_layout_two_per_image(bench):
    root = bench[0]
    release = _mme_release(root)
    rows = _jsonl(root / "MME" / "llava_mme.jsonl")
    assert sorted((r["image"], r["text"]) for r in rows) == sorted((im, q + SINGLE) for _, im, q, _ in release)
    assert all(r["question_id"] == r["image"] and r["image"].startswith(r["category"] + "/") for r in rows)
    by_image = defaultdict(list)
    for sub, image, q, a in release:
        assert a in ("Yes", "No") and q.endswith(" Please answer yes or no.")
        assert (root / "MME" / "MME_Benchmark_release_version" / image).is_file()
        by_image[image].append(a)
    assert all(sorted(v) == ["No", "Yes"] for v in by_image.values())
    assert {s for s, *_ in release} == set(MME_SUBTASKS)
    # Yes isn't always first within an image's pair.
    assert 0 < sum(a == "Yes" for *_, a in release[::2]) < len(release) // 2


def test_mmmu_parquet_layout(bench):
    records = _mmmu_records(bench[0])
    assert len(records) == 50
    for r in records:
        options = ast.literal_eval(r["options"])
        assert len(options) == 4 and len(set(options)) == 4
        assert r["answer"] in "ABCD" and len(r["answer"]) == 1
        assert r["question_type"] == "multiple-choice" and r["subfield"]
        assert Image.open(io.BytesIO(r["image_1"]["bytes"])).format == "PNG" and r["image_2"] is None
        assert r["id"].startswith("validation_")
    assert len(Counter(r["answer"] for r in records)) == 4


# ---- answers against scenes ------------------------------------------------------------

def _cell(scene: Scene, o: Obj) -> tuple[int, int]:
    third = scene.image_size / 3
    return int(o.y // third), int(o.x // third)


def _objects(scene: Scene, phrase: str) -> list[Obj]:
    m = re.fullmatch(r"the (?:(\w+) )?(\w+)(?: (?:at|on|in) the (.+))?", phrase)
    assert m, phrase
    adj, kind, pos = m.groups()
    assert kind in KINDS, phrase
    return [o for o in scene.objects if o.kind == kind
            and (pos is None or _cell(scene, o) == CELLS[pos])
            and (adj is None or adj in (o.colour, o.size))]


def _one(scene: Scene, phrase: str) -> Obj:
    found = _objects(scene, phrase)
    assert len(found) == 1, f"{phrase!r} is ambiguous or absent in {scene}"
    return found[0]


def _at(scene: Scene, pos: str) -> Obj:
    """The object at a named position, which must be unambiguous under the cell reading
    and under the whole-row / whole-column reading of 'top', 'left', etc."""
    (obj,) = [o for o in scene.objects if _cell(scene, o) == CELLS[pos]]
    row, col = CELLS[pos]
    if pos in ("top", "bottom"):
        assert sum(_cell(scene, o)[0] == row for o in scene.objects) == 1, (pos, scene)
    if pos in ("left", "right"):
        assert sum(_cell(scene, o)[1] == col for o in scene.objects) == 1, (pos, scene)
    return obj


def _has(scene: Scene, colour: str, kind: str) -> bool:
    return any((o.colour, o.kind) == (colour, kind) for o in scene.objects)


REL = {"to the left of": lambda a, b: a[1] < b[1], "to the right of": lambda a, b: a[1] > b[1],
       "above": lambda a, b: a[0] < b[0], "below": lambda a, b: a[0] > b[0]}
REL_RE = "|".join(REL)


def _related(scene: Scene, rel: str, anchor: Obj) -> list[Obj]:
    return [o for o in scene.objects if REL[rel](_cell(scene, o), _cell(scene, anchor))]


def _yn(b: bool) -> str:
    return "yes" if b else "no"


def _truth_common(s: Scene, q: str) -> str | None:
    """Short lowercase answer for questions shared by VQAv2 and GQA, else None."""
    if q == "What colour is the background?":
        return s.background
    if m := re.fullmatch(r"What colour is the shape (" + REL_RE + r") (the .+)\?", q):
        (o,) = _related(s, m[1], _one(s, m[2]))
        return o.colour
    if m := re.fullmatch(r"What shape is (" + REL_RE + r") (the .+)\?", q):
        (o,) = _related(s, m[1], _one(s, m[2]))
        return o.kind
    if m := re.fullmatch(r"What colour is (the .+)\?", q):
        return _one(s, m[1]).colour
    if m := re.fullmatch(r"What shape is (?:at|on|in) the (.+)\?", q):
        return _at(s, m[1]).kind
    if m := re.fullmatch(r"How many (\w+) are there\?", q):
        return str(sum(o.kind == PLURAL_TO_KIND[m[1]] for o in s.objects))
    if m := re.fullmatch(r"How many (\w+) objects are there\?", q):
        return str(sum(o.colour == m[1] for o in s.objects))
    if re.fullmatch(r"How many (objects are there in the image|shapes are in the picture)\?", q):
        return str(len(s.objects))
    if m := re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", q):
        return _yn(_has(s, m[1], m[2]))
    if m := re.fullmatch(r"Is the background (\w+)\?", q):
        return _yn(s.background == m[1])
    if m := re.fullmatch(r"Is there an? (\w+) (" + REL_RE + r") (the .+)\?", q):
        return _yn(any(o.kind == m[1] for o in _related(s, m[2], _one(s, m[3]))))
    if m := re.fullmatch(r"Is (the .+) to the left or to the right of (the .+)\?", q):
        a, b = _cell(s, _one(s, m[1]))[1], _cell(s, _one(s, m[2]))[1]
        assert a != b
        return "left" if a < b else "right"
    if m := re.fullmatch(r"Is (the .+) above or below (the .+)\?", q):
        a, b = _cell(s, _one(s, m[1]))[0], _cell(s, _one(s, m[2]))[0]
        assert a != b
        return "above" if a < b else "below"
    if m := re.fullmatch(r"Are there both (\w+) and (\w+) in the image\?", q):
        return _yn(all(any(o.kind == PLURAL_TO_KIND[p] for o in s.objects) for p in m.groups()))
    if m := re.fullmatch(r"Are (the .+) and (the .+) the same colour\?", q):
        return _yn(_one(s, m[1]).colour == _one(s, m[2]).colour)
    if m := re.fullmatch(r"Is (the .+) (\w+)\?", q):
        assert m[2] in COLOURS
        return _yn(_one(s, m[1]).colour == m[2])
    return None


def test_vqav2_and_gqa_answers_match_scenes(bench):
    root, seed, px = bench
    questions = _json(root / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json")["questions"]
    anns = _json(root / "vqav2" / "v2_mscoco_val2014_annotations.json")["annotations"]
    for q, a in zip(questions, anns):
        truth = _truth_common(bench_scene(seed, "vqav2", q["image_id"], px), q["question"])
        assert truth is not None, q["question"]
        assert a["multiple_choice_answer"] == truth, (q, a)
        assert sum(x["answer"] == truth for x in a["answers"]) >= 6
    rows = _jsonl(root / "gqa" / "llava_gqa_testdev_balanced.jsonl")
    anns = _json(root / "gqa" / "data" / "testdev_balanced_questions.json")
    for r in rows:
        a = anns[r["question_id"]]
        truth = _truth_common(bench_scene(seed, "gqa", _index(r["image"]), px), a["question"])
        assert truth is not None, a["question"]
        assert a["answer"] == truth, (r, a)
    assert len({r["image"] for r in rows}) * 3 == len(rows)


def test_textvqa_answers_match_scenes(bench):
    root, seed, px = bench
    rows = _jsonl(root / "textvqa" / "llava_textvqa_val_v051_ocr.jsonl")
    data = _json(root / "textvqa" / "TextVQA_0.5.1_val.json")["data"]
    for r, a in zip(rows, data):
        s = bench_scene(seed, "textvqa", _index(r["image"]), px)
        q, ocr, _ = r["text"].split("\n")
        assert s.word in WORDS and ocr == f"Reference OCR token: {s.word}"
        if q == "How many letters does the word in the image have?":
            truth = str(len(s.word))
        else:
            if m := re.fullmatch(r"What word is written below (the .+)\?", q):
                assert _one(s, m[1]).y < px * 2 / 3
            else:
                assert q in ("What word is written in the image?", "What does the text in the image say?",
                             "What is written at the bottom of the picture?"), q
            truth = s.word
        assert Counter(a["answers"]).most_common(1)[0][0] == truth
        assert sum(x == truth for x in a["answers"]) >= 6
        # Variants differ only in case (or are number words); at most two are wrong.
        same = {truth} | {w for w, n in NUM.items() if str(n) == truth}
        assert sum(x.lower() not in same for x in a["answers"]) <= 2


def _sqa_correct(p: dict, s: Scene | None) -> None:
    q, choices, ans = p["question"], p["choices"], p["choices"][p["answer"]]
    if s is None:
        if m := re.fullmatch(r"Which colour do you get by mixing (\w+) and (\w+) paint\?", q):
            assert ans == MIXES[frozenset(m.groups())]
        elif m := re.fullmatch(r"How many sides does an? (\w+) have\?", q):
            assert ans == str(SIDES[m[1]])
        elif q == "How many corners does a circle have?":
            assert ans == "0"
        elif m := re.fullmatch(r"How many (\w+) does the picture show\?", q):
            h = re.fullmatch(r"A picture shows (\w+) \w+ \w+ and (\w+) \w+ (\w+)\.", p["hint"])
            last = h[3] if h[3] in KINDS else PLURAL_TO_KIND[h[3]]
            assert last == PLURAL_TO_KIND[m[1]]
            assert ans == str(NUM[h[1]] + NUM[h[2]])
        elif m := re.fullmatch(r'What is the plural of "(\w+)"\?', q):
            assert PLURAL_TO_KIND[ans] == m[1]
        elif m := re.fullmatch(r"What is the opposite of (\w+)\?", q):
            assert ans == OPPOSITE[m[1]]
        elif q == "Which is the biggest?":
            sizes = [c.split()[1] for c in choices]
            assert ans.split()[1] == max(sizes, key=SIZE_ORDER.index)
        else:
            raise AssertionError(f"no checker for {q!r}")
        return
    if m := re.fullmatch(r"How many (\w+) are in the picture\?", q):
        assert ans == str(sum(o.kind == PLURAL_TO_KIND[m[1]] for o in s.objects))
    elif q == "Which of these shapes is in the picture?":
        present = {o.kind for o in s.objects}
        assert ans in present and not present & (set(choices) - {ans})
    elif m := re.fullmatch(r"What size is (the .+)\?", q):
        assert ans == _one(s, m[1]).size
    else:
        assert ans == _truth_common(s, q), (q, ans, s)


def test_scienceqa_answers_match_scenes(bench):
    root, seed, px = bench
    problems = _json(root / "scienceqa" / "problems.json")
    kinds = Counter()
    for pid, p in problems.items():
        s = bench_scene(seed, "scienceqa", int(pid), px)
        assert (s is None) == (p["image"] is None)
        _sqa_correct(p, s)
        kinds[p["subject"]] += 1
    assert "natural science" in kinds


def _mme_truth(s: Scene, q: str) -> str:
    assert q.endswith(" Please answer yes or no.")
    q = q.removesuffix(" Please answer yes or no.")

    def yn(b):
        return "Yes" if b else "No"
    if m := re.fullmatch(r"Is there an? (\w+) (\w+) in this image\?", q):
        return yn(_has(s, m[1], m[2]))
    if m := re.fullmatch(r"(?:Is|Are) there exactly (\w+) (\w+) in this image\?", q):
        n, noun = NUM[m[1]], m[2]
        real = len(s.objects) if noun in ("object", "objects") else \
            sum(o.kind == PLURAL_TO_KIND.get(noun, noun) for o in s.objects)
        return yn(n == real)
    if m := re.fullmatch(r"Is (the .+) on the (left|right) side of (the .+)\?", q):
        a, b = _cell(s, _one(s, m[1]))[1], _cell(s, _one(s, m[3]))[1]
        return yn(a < b if m[2] == "left" else a > b)
    if m := re.fullmatch(r"Is (the .+) (above|below) (the .+)\?", q):
        a, b = _cell(s, _one(s, m[1]))[0], _cell(s, _one(s, m[3]))[0]
        return yn(a < b if m[2] == "above" else a > b)
    if m := re.fullmatch(r'Is the word "(\w+)" written in this image\?', q):
        return yn(s.word == m[1])
    if m := re.fullmatch(r"Is (the .+) round\?", q):
        return yn(_one(s, m[1]).kind == "circle")
    if m := re.fullmatch(r"Does (the .+) have corners\?", q):
        return yn(_one(s, m[1]).kind != "circle")
    if m := re.fullmatch(r"Does (the .+) have (\w+) sides\?", q):
        return yn(SIDES[_one(s, m[1]).kind] == NUM.get(m[2], m[2]))
    if m := re.fullmatch(r"Is the number of objects in this image multiplied by two equal to (\d+)\?", q):
        return yn(2 * len(s.objects) == int(m[1]))
    if m := re.fullmatch(r"Is the number of (\w+) plus the number of (\w+) in this image equal to (\d+)\?", q):
        k1, k2 = PLURAL_TO_KIND[m[1]], PLURAL_TO_KIND[m[2]]
        return yn(sum(o.kind in (k1, k2) for o in s.objects) == int(m[3]))
    if m := re.fullmatch(r"Is (the .+) (\w+)\?", q):
        assert m[2] in COLOURS
        return yn(_one(s, m[1]).colour == m[2])
    raise AssertionError(f"no checker for {q!r}")


def test_mme_answers_match_scenes(bench):
    root, seed, px = bench
    for sub, image, question, answer in _mme_release(root):
        s = bench_scene(seed, f"mme/{sub}", _index(image), px)
        assert answer == _mme_truth(s, question), (image, question, s)


def _mmmu_truth(s: Scene, q: str, options: list[str]) -> str:
    if q == "Which shape appears most often in the image?":
        (top, n), *rest = Counter(o.kind for o in s.objects).most_common()
        assert not rest or rest[0][1] < n
        return top
    if q == "How many sides do all the triangles and squares in the image have altogether?":
        return str(sum(SIDES[o.kind] for o in s.objects if o.kind in ("triangle", "square")))
    if m := re.fullmatch(r"Which colour do you get by mixing paint of the colour of (the .+) "
                         r"with (\w+) paint\?", q):
        return MIXES[frozenset((_one(s, m[1]).colour, m[2]))]
    if q == "Which position in the image has no shape?":
        taken = {_cell(s, o) for o in s.objects}
        empty = [p for p in options if CELLS[p] not in taken]
        assert len(empty) == 1 and not (s.word and CELLS[empty[0]][0] == 2)
        return empty[0]
    if m := re.fullmatch(r"How many objects in the image are not (\w+)\?", q):
        return str(sum(o.colour != m[1] for o in s.objects))
    if m := re.fullmatch(r"How many sides does (the .+) have\?", q):
        return str(SIDES[_one(s, m[1]).kind])
    raise AssertionError(f"no checker for {q!r}")


def test_mmmu_answers_match_scenes(bench):
    root, seed, px = bench
    subfields = Counter()
    for a in _mmmu_records(root):
        s = bench_scene(seed, "mmmu", _index(a["id"]) - 1, px)
        options = ast.literal_eval(a["options"])
        assert options["ABCD".index(a["answer"])] == _mmmu_truth(s, a["question"], options)
        assert Image.open(io.BytesIO(a["image_1"]["bytes"])).size == (px, px)
        subfields[a["subfield"]] += 1
    assert len(subfields) >= 4


# ---- POPE negatives --------------------------------------------------------------------

def _pope(root: Path, seed: int, px: int):
    """(split, image, scene, colour, kind, label) for every POPE question."""
    out = []
    for split in POPE_SPLITS:
        for a in _jsonl(root / "pope" / "coco" / f"coco_pope_{split}.json"):
            m = re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", a["text"])
            out.append((split, a["image"], bench_scene(seed, "pope", _index(a["image"]), px), m[1], m[2],
                        a["label"]))
    return out


def test_pope_labels_match_scenes(bench):
    root, seed, px = bench
    items = _pope(root, seed, px)
    for split, _, s, colour, kind, label in items:
        assert label == ("yes" if _has(s, colour, kind) else "no"), (split, colour, kind, s)
    # The yes questions are the same in every split (as in POPE); the negatives differ.
    yes = {sp: sorted((im, c, k) for sp_, im, _, c, k, lab in items if sp_ == sp and lab == "yes")
           for sp in POPE_SPLITS}
    assert yes["random"] == yes["popular"] == yes["adversarial"]


def test_pope_negative_distributions(tmp_path):
    build_benchmarks(tmp_path, seed=0, size="small", image_size=64)
    items = _pope(tmp_path, 0, 64)
    freq = Counter()  # how many images each (colour, kind) appears in
    for s in {im: s for _, im, s, *_ in items}.values():
        freq.update({(o.colour, o.kind) for o in s.objects})

    def shares(s, colour, kind):
        return any(o.colour == colour or o.kind == kind for o in s.objects)
    neg = {sp: [(s, c, k) for sp_, _, s, c, k, lab in items if sp_ == sp and lab == "no"]
           for sp in POPE_SPLITS}
    share = {sp: sum(shares(*x) for x in v) / len(v) for sp, v in neg.items()}
    assert share["adversarial"] == 1.0 and share["adversarial"] > share["random"] + 0.1, share
    both = {sp: sum(sum((o.colour == c) + (o.kind == k) for o in s.objects) for s, c, k in v) / len(v)
            for sp, v in neg.items()}
    assert both["adversarial"] > both["random"], both
    popularity = {sp: sum(freq[(c, k)] for _, c, k in v) / len(v) for sp, v in neg.items()}
    assert popularity["popular"] > popularity["random"] * 1.5, popularity
    assert len({(c, k) for _, c, k in neg["random"]}) > len({(c, k) for _, c, k in neg["popular"]})
