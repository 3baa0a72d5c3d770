"""The synthetic world: determinism, counts, images, and answers that match the scenes.

Answers are re-derived here from the scene by parsing each question, independently of
the language module, so a wrong template or a wrong derivation fails the test.
"""

from __future__ import annotations

import io
import json
import random
import re
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from vlmsweep.config.errors import ConfigError
from vlmsweep.data.shards import iter_samples, read_manifest
from vlmsweep.data.world import WORLD_SIZES, build_world
from vlmsweep.data.world import questions as Q
from vlmsweep.data.world.build import caption_items, check_args, instruct_items
from vlmsweep.data.world.language import detailed_caption, short_caption
from vlmsweep.data.world.scenes import (COLOURS, KINDS, Obj, Scene, position_name, render,
                                        render_png, sample_scene)

SPLITS = ("captions_short", "captions_detailed", "instruct", "instruct_detailed")
PLURAL_TO_KIND = {("crosses" if k == "cross" else k + "s"): k for k in KINDS}
NUM = {w: i for i, w in enumerate("no one two three four five six seven eight nine".split())}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return out, build_world(out, seed=0, size="tiny", image_size=64)


def _hashes(summary):
    return {s: summary["splits"][s]["content_hash"] for s in SPLITS}


def test_tiny_build_is_deterministic_and_seeded(world, tmp_path):
    _, summary = world
    again = build_world(tmp_path / "again", seed=0, size="tiny", image_size=64)
    assert _hashes(again) == _hashes(summary)
    other = build_world(tmp_path / "other", seed=1, size="tiny", image_size=64)
    assert all(_hashes(other)[s] != _hashes(summary)[s] for s in SPLITS)


def test_counts_per_split(world):
    out, summary = world
    n_cap, n_ins = WORLD_SIZES["tiny"]
    want = {"captions_short": n_cap, "captions_detailed": n_cap, "instruct": n_ins,
            "instruct_detailed": n_ins}
    on_disk = json.loads((out / "world.json").read_text())
    assert on_disk == summary
    assert (summary["seed"], summary["size"], summary["image_size"]) == (0, "tiny", 64)
    for split, n in want.items():
        assert read_manifest(out / split)["rows"] == n == summary["splits"][split]["rows"]
        assert sum(summary["splits"][split]["sources"].values()) == n
    assert sum(summary["sources"].values()) == sum(want.values())


def test_caption_splits_share_images(world):
    out, _ = world
    short = list(iter_samples(out / "captions_short"))
    detailed = list(iter_samples(out / "captions_detailed"))
    assert [s["id"] for s in short] == [s["id"] for s in detailed]
    assert all(a["images"] == b["images"] for a, b in zip(short, detailed))
    assert all(len(b["conversations"][1]["text"]) > len(a["conversations"][1]["text"])
               for a, b in zip(short, detailed))


def test_images_decode_at_requested_size(world):
    out, _ = world
    for split in SPLITS:
        for s in iter_samples(out / split):
            for png in s["images"]:
                img = Image.open(io.BytesIO(png))
                assert img.format == "PNG" and img.size == (64, 64) and img.mode == "RGB"
    for size in (32, 384):
        short, _ = next(caption_items(3, 1, size))
        assert Image.open(io.BytesIO(short.sample["images"][0])).size == (size, size)


def test_markers_match_images_and_modalities_present(world):
    out, summary = world
    modalities = set()
    for split in SPLITS:
        for s in iter_samples(out / split):
            markers = [t["text"].count("<image>") for t in s["conversations"]]
            assert sum(markers) == len(s["images"])
            if s["images"]:  # images are announced in the first user turn only
                first_user = next(i for i, t in enumerate(s["conversations"]) if t["role"] == "user")
                assert markers[first_user] == len(s["images"])
            modalities.add(s["modality"])
    assert modalities == {"text", "image", "multi_image"}
    assert {"world/multi_image", "world/text_only", "world/conversation", "world/ocr",
            "world/choice", "world/count", "world/yes_no", "world/vqa", "world/describe_short",
            "world/describe_detailed"} <= set(summary["sources"])


def test_instruct_detailed_swaps_only_the_describe_answers(world):
    """ShareGPT4V's SFT mix = LLaVA's with detailed captions swapped in: same ids, images and
    questions; only the describe rows change, to the detailed caption of the same scene."""
    out, summary = world
    short = list(iter_samples(out / "instruct"))
    detailed = list(iter_samples(out / "instruct_detailed"))
    assert [s["id"] for s in short] == [s["id"] for s in detailed]
    changed = [(a, b) for a, b in zip(short, detailed) if a != b]
    n_describe = summary["splits"]["instruct"]["sources"]["world/describe_short"]
    assert len(changed) == n_describe == summary["splits"]["instruct_detailed"]["sources"]["world/describe_detailed"] > 0
    for a, b in changed:
        assert (a["source"], b["source"]) == ("world/describe_short", "world/describe_detailed")
        assert a["images"] == b["images"]
        assert len(b["conversations"][1]["text"]) > len(a["conversations"][1]["text"])
    regenerated = {i.sample["id"]: i for i in instruct_items(0, WORLD_SIZES["tiny"][1], 64, "detailed")
                   if i.kind == "describe"}
    for _, b in changed:
        assert b == regenerated[b["id"]].sample
        assert b["conversations"][1]["text"] == detailed_caption(regenerated[b["id"]].scenes[0])


# ---- answers against scenes ------------------------------------------------------------

def _objects(scene: Scene, phrase: str) -> list[Obj]:
    """Objects matching a reference like 'the red circle', 'the small star on the left',
    'the circle at the top left'."""
    m = re.fullmatch(r"the (?:(\w+) )?(\w+)(?: (?:at|on|in) the (.+))?", phrase)
    adj, kind, pos = m.groups()
    assert kind in KINDS, phrase
    return [o for o in scene.objects if o.kind == kind and (pos is None or o.position == pos)
            and (adj is None or adj in (o.colour, o.size))]


def _one(scene: Scene, phrase: str) -> Obj:
    found = _objects(scene, phrase)
    assert len(found) == 1, f"{phrase!r} is ambiguous or absent in {scene}"
    return found[0]


def _truth(scenes: list[Scene], q: str) -> str:
    """The correct short answer to question q about scenes, derived from the scenes."""
    s = scenes[0] if scenes else None
    if m := re.fullmatch(r"What colour is the background\?", q):
        return s.background
    if m := re.fullmatch(r"What colour is (.+)\?", q):
        return _one(s, m[1]).colour
    if m := re.fullmatch(r"What size is (.+)\?", q):
        return _one(s, m[1]).size
    if m := re.fullmatch(r"Where is (.+)\?", q):
        return _one(s, m[1]).position
    if m := re.fullmatch(r"What shape is (?:at|on|in) the (.+)\?", q):
        (obj,) = [o for o in s.objects if o.position == m[1]]
        return obj.kind
    if m := re.fullmatch(r"How many (\w+) are there\?", q):
        return str(sum(o.kind == PLURAL_TO_KIND[m[1]] for o in s.objects))
    if m := re.fullmatch(r"How many (\w+) objects are there\?", q):
        return str(sum(o.colour == m[1] for o in s.objects))
    if re.fullmatch(r"How many (objects are there in the image|shapes are in the picture)\?", q):
        return str(len(s.objects))
    if m := re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", q):
        return "Yes" if any((o.colour, o.kind) == (m[1], m[2]) for o in s.objects) else "No"
    if q in ("What word is written in the image?", "What does the text in the image say?"):
        assert s.word
        return s.word
    if q == "Which image has more objects? Answer first or second.":
        a, b = (len(x.objects) for x in scenes)
        assert a != b
        return "first" if a > b else "second"
    if m := re.fullmatch(r"Which image contains an? (\w+) (\w+)\? Answer first or second\.", q):
        has = [any((o.colour, o.kind) == (m[1], m[2]) for o in x.objects) for x in scenes]
        assert sum(has) == 1
        return "first" if has[0] else "second"
    if q.startswith("Do the two images have the same background colour?"):
        return "Yes" if scenes[0].background == scenes[1].background else "No"
    raise AssertionError(f"no checker for question {q!r}")


MIXES = {frozenset(("red", "blue")): "purple", frozenset(("red", "yellow")): "orange",
         frozenset(("blue", "yellow")): "green", frozenset(("black", "white")): "gray"}


SIDES = {"triangle": 3, "square": 4, "diamond": 4}
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top",
            "small": "large", "large": "small"}


def _check_fact(q: str, a: str) -> None:
    if m := re.fullmatch(r"What colour do you get by mixing (\w+) and (\w+) paint\?", q):
        assert a.endswith(f" {MIXES[frozenset((m[1], m[2]))]}.")
    elif m := re.fullmatch(r"How many sides do (\w+) (\w+)s have altogether\?", q):
        assert a.endswith(f" {NUM[m[1]] * SIDES[m[2]]} sides altogether.")
    elif m := re.fullmatch(r"How many sides does an? (\w+) have\?", q):
        assert a.endswith(f" has {list(NUM)[SIDES[m[1]]]} sides.")
    elif q == "How many corners does a circle have?":
        assert a == "A circle has no corners."
    elif m := re.fullmatch(r"A picture shows (\w+) \w+ \w+ and (\w+) \w+ \w+\. How many \w+ does it show\?", q):
        assert a.split()[2] == list(NUM)[NUM[m[1]] + NUM[m[2]]]
    elif m := re.fullmatch(r'What is the plural of "(\w+)"\?', q):
        assert a.endswith(f'"{next(p for p, k in PLURAL_TO_KIND.items() if k == m[1])}".')
    elif m := re.fullmatch(r"What is the opposite of (\w+)\?", q):
        assert a.endswith(f" is {OPPOSITE[m[1]]}.")
    elif m := re.fullmatch(r"Which is bigger: an? (\w+) (\w+) or an? (\w+) \w+\?", q):
        order = ["small", "medium", "large"]
        assert a.split()[1] == max(m[1], m[3], key=order.index)
    else:
        raise AssertionError(f"no checker for fact {q!r}")


def test_every_instruct_answer_matches_its_scene(world):
    out, _ = world
    on_disk = {s["id"]: s for s in iter_samples(out / "instruct")}
    checked = set()
    for item in instruct_items(0, WORLD_SIZES["tiny"][1], 64):
        s = item.sample
        assert on_disk[s["id"]] == s  # regenerating an item gives exactly what was written
        turns = s["conversations"]
        if item.kind == "describe":
            (scene,) = item.scenes
            assert turns[-1]["text"] == short_caption(scene)
        elif item.kind == "text_only":
            for qa in item.qas:
                _check_fact(qa.question, qa.answer)
        elif item.kind == "choice":
            (qa,) = item.qas
            prompt = turns[0]["text"]
            options = dict(re.findall(r"^([A-D])\. (.+)$", prompt, re.M))
            assert options[turns[-1]["text"]] == _truth(item.scenes, qa.question)
            assert len(set(options.values())) == len(options) >= 3
        else:
            for qa in item.qas:
                assert qa.answer == _truth(item.scenes, qa.question), (s["id"], qa)
            if item.kind == "conversation":
                assert 2 <= len(item.qas) <= 3
                assert [t["text"] for t in turns[1::2]] == [qa.sentence for qa in item.qas]
            else:
                assert turns[-1]["text"] == item.qas[0].answer
        checked.update(qa.kind for qa in item.qas)
    assert {"colour", "shape_at", "size", "where", "background", "count_kind", "count_colour",
            "count_all", "exists", "word", "more_objects", "contains", "same_background",
            "mix", "sides", "add", "plural", "opposite", "bigger"} <= checked


def test_every_text_fact_is_correct():
    for seed in range(200):  # enough draws to cover every fact table entry
        for gen in Q.TEXT_FACTS:
            fact = gen(random.Random(seed))
            _check_fact(fact.question, fact.answer)
            assert fact.key in fact.domain


def test_render_matches_scene():
    rng = random.Random(5)
    for _ in range(20):
        scene = sample_scene(rng, 128)
        pixels = np.asarray(render(scene)).astype(int)
        for o in scene.objects:
            assert o.position == position_name(o.x, o.y, 128)
            # the shape's centre is drawn in its colour (all kinds are solid at the centre)
            assert np.abs(pixels[int(o.y), int(o.x)] - COLOURS[o.colour]).max() < 30, o
        if scene.word:  # the word really is drawn, in the bottom third
            bare = np.asarray(render(replace(scene, word=None))).astype(int)
            assert (pixels != bare)[128 * 2 // 3:].any() and not (pixels != bare)[:128 * 2 // 3].any()


def test_word_fraction_near_thirty_percent(world):
    scenes = [item.scenes[0] for item, _ in caption_items(0, 256, 64)]
    assert 0.2 < sum(bool(s.word) for s in scenes) / len(scenes) < 0.4


def test_language_on_a_constructed_scene():
    objs = (Obj("circle", "red", "large", 10, 10, "top left"),
            Obj("square", "blue", "small", 54, 10, "top right"),
            Obj("square", "blue", "medium", 32, 32, "centre"))
    scene = Scene(64, "gray", objs, word="cat")
    assert short_caption(scene) == "a red circle and two blue squares."
    detailed = detailed_caption(scene)
    for part in ("three objects", "gray background", "one circle and two squares",
                 "A large red circle is at the top left.", "A medium blue square is in the centre.",
                 '"cat"'):
        assert part in detailed
    for seed in range(30):
        for gen in Q.CONVERSATION:
            qa = gen(scene, random.Random(seed))
            assert qa.answer == _truth([scene], qa.question)
    assert Q.q_shape_at(scene, random.Random(0)).answer in ("circle", "square")


def test_png_is_deterministic():
    scene = sample_scene(random.Random(1), 64, word=True)
    assert render_png(scene) == render_png(scene)


def test_size_and_image_size_validation(tmp_path):
    for size in WORLD_SIZES:
        check_args(0, size, 64)  # every advertised size passes validation
    with pytest.raises(ConfigError) as err:
        build_world(tmp_path, size="huge")
    assert err.value.problems[0][0] == "data.size"
    assert all(name in str(err.value) for name in ("tiny", "small", "medium"))
    for bad in (16, 385, "64"):
        with pytest.raises(ConfigError) as err:
            build_world(tmp_path, image_size=bad)
        assert err.value.problems[0][0] == "data.image_size"
    assert not (tmp_path / "world.json").exists()


def test_a_mix_is_a_world_of_its_own_with_the_same_captions(world, tmp_path):
    """data.synthetic.mix: the instruct split draws only the named kinds, in their shares; the
    caption splits are the default world's, byte for byte (a pretrain on them is reused)."""
    _, default = world
    mixed = build_world(tmp_path, seed=0, size="tiny", image_size=64, mix={"yes_no": 3, "vqa": 1, "ocr": 0})
    n = WORLD_SIZES["tiny"][1]
    assert mixed["mix"] == {"vqa": 0.25, "yes_no": 0.75} and "mix" not in default
    assert mixed["splits"]["instruct"]["sources"] == {"world/vqa": n // 4, "world/yes_no": 3 * n // 4}
    for split in ("captions_short", "captions_detailed"):
        assert mixed["splits"][split]["content_hash"] == default["splits"][split]["content_hash"]
    # every item regenerates from (seed, index, kind), and its answer matches its scene
    regenerated = list(instruct_items(0, n, 64, mix={"yes_no": 3, "vqa": 1}))
    assert [it.sample["id"] for it in regenerated] == [s["id"] for s in iter_samples(tmp_path / "instruct")]
    for item in regenerated:
        if item.kind == "yes_no":
            qa, scene = item.qas[0], item.scenes[0]
            colour, kind = re.match(r"Is there an? (\w+) (\w+) in the image\?", qa.question).groups()
            present = any(o.colour == colour and o.kind == kind for o in scene.objects)
            assert qa.answer == ("Yes" if present else "No")


def test_mix_problems_name_the_field_and_the_default_mix_is_the_default_world():
    from vlmsweep.config.schema import DataConfig
    from vlmsweep.data.prepare import world_name
    from vlmsweep.data.world.build import MIX, mix_problems, normal_mix

    assert mix_problems({"yesno": 1})[0][0] == "data.synthetic.mix.yesno"
    assert "did you mean yes_no" in mix_problems({"yesno": 1})[0][1]
    assert mix_problems({"vqa": -1})[0][0] == "data.synthetic.mix.vqa"
    assert mix_problems({"vqa": True})[0][0] == "data.synthetic.mix.vqa"
    assert mix_problems({"vqa": 0}) == [("data.synthetic.mix", "every weight is 0: the instruct split would be empty")]
    with pytest.raises(ConfigError):
        normal_mix({"yesno": 1})
    # the default mix, however it is written, is the default world: same folder, same items
    assert normal_mix({k: 100 * w for k, w in MIX.items()}) is None
    name = lambda mix: world_name(DataConfig(synthetic={"size": "small", "mix": mix}))  # noqa: E731
    assert name(None) == name(dict(MIX)) == "world-v3-small-seed0-px64"
    assert name({"yes_no": 1}) == name({"yes_no": 5, "ocr": 0}) != name({"yes_no": 1, "vqa": 1})
    assert name({"yes_no": 1}).startswith("world-v3-small-seed0-px64-mix")
