"""instruct_llava_mix: LLaVA-665K's length spread, true answers, built on demand beside an
unchanged world.

Lengths are data/world/llava_mix.py's `_chars`: characters of conversation text plus an
allowance per turn for the template's markers. The miniatures' tokenizer is byte-level, so
that is about their token count less the system prompt.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from test_world import _check_fact, _truth
from vlmsweep.config.load import resolve
from vlmsweep.config.schema import DataConfig
from vlmsweep.config.workdir import WorkDir
from vlmsweep.data.prepare import WORLD_VERSION, ensure_splits
from vlmsweep.data.shards import iter_samples, read_manifest
from vlmsweep.data.world import WORLD_SIZES, build_world
from vlmsweep.data.world import llava_mix as M
from vlmsweep.data.world.build import instruct_items
from vlmsweep.data.world.language import DETAILED_PROMPTS, detailed_caption

# The tiny world (seed 0, 64 px) as built before this split existed: adding it must not move them.
TINY_HASHES = {
    "captions_short": "9e552cbe24561c8ca4e8eb1bf678bb099a97afb65c3c6a42276cf2d0f5c984d2",
    "captions_detailed": "b21a8f00d73de0c77bdc08b601732f04b02b085c3563449b3b3e5a590321329b",
    "instruct": "15937d1af93336d81ef276f8cb1306e130e31488c8d4a2149b81125829dfeb1b",
    "instruct_detailed": "c2386d9cb19865fbbb19eaf1c643b86e96c9ba849b2ef7d8b3a75f06ed266015",
}
N = WORLD_SIZES["tiny"][1]


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    out = tmp_path_factory.mktemp("mix") / M.SPLIT
    return out, M.build_llava_mix(out, seed=0, size="tiny", image_size=64)


def test_deterministic_and_seeded(mix, tmp_path):
    _, manifest = mix
    assert M.build_llava_mix(tmp_path / "again", seed=0, size="tiny", image_size=64)["content_hash"] \
        == manifest["content_hash"]
    assert M.build_llava_mix(tmp_path / "other", seed=1, size="tiny", image_size=64)["content_hash"] \
        != manifest["content_hash"]
    assert [i.sample for i in M.llava_mix_items(0, N, 64)] == list(iter_samples(mix[0]))


def test_kinds_in_llava_665k_shares(mix):
    _, manifest = mix
    assert manifest["rows"] == N and manifest["split"] == M.SPLIT
    kinds = {}
    for source, n in manifest["sources"].items():
        kind = {"choice": "vqa", "vqa_rounds": "vqa"}.get(source.rsplit("/", 1)[1], source.rsplit("/", 1)[1])
        kinds[kind] = kinds.get(kind, 0) + n
    total = sum(M.SHARES.values())
    assert {k: round(n / N, 2) for k, n in kinds.items()} == {k: round(w / total, 2) for k, w in M.SHARES.items()}
    assert manifest["modalities"] == {"image": N - kinds["text_only"], "text": kinds["text_only"]}


def test_length_spread(mix):
    by_kind: dict[str, list[int]] = {}
    for item in M.llava_mix_items(0, N, 64):
        by_kind.setdefault(item.sample["source"].rsplit("/", 1)[1], []).append(M._chars(item.sample["conversations"]))
    lengths = np.concatenate([np.array(v) for v in by_kind.values()])
    assert lengths.max() <= M.TEXT_BUDGET
    # single questions stay short; grouped VQA and conversations run to hundreds; text-only has the tail
    assert max(by_kind["vqa"] + by_kind["choice"]) < 200
    assert np.median(by_kind["vqa_rounds"]) > 400 and np.median(by_kind["conversation"]) > 400
    assert max(by_kind["text_only"]) > 1500 and max(by_kind["text_only"]) == lengths.max()
    p10, p50, p90 = np.percentile(lengths, [10, 50, 90])
    assert p10 < 200 and p50 > 400 and p90 > 800 and p90 / p10 > 4
    instruct = np.array([M._chars(i.sample["conversations"]) for i in instruct_items(0, N, 64)])
    assert p50 > 3 * np.median(instruct) and lengths.max() > 4 * instruct.max()


def test_images_and_markers(mix):
    for s in iter_samples(mix[0]):
        markers = [t["text"].count("<image>") for t in s["conversations"]]
        if s["source"].endswith("/text_only"):
            assert s["images"] == [] and s["modality"] == "text" and sum(markers) == 0
            assert {t["role"] for t in s["conversations"]} == {"user", "assistant"}
        else:  # one image, announced in the first user turn only
            assert len(s["images"]) == 1 and s["modality"] == "image" and markers[0] == 1 == sum(markers)


def test_every_answer_matches_its_scene():
    checked = set()
    for item in M.llava_mix_items(0, N, 64):
        turns = item.sample["conversations"]
        users, answers = [t["text"] for t in turns[0::2]], [t["text"] for t in turns[1::2]]
        questions = [u.removeprefix("<image>\n") for u in users]
        if item.kind == "text_only":
            assert len(item.qas) == len(users) >= 1 and len(set(users)) == len(users)
            for qa, q, a in zip(item.qas, users, answers):
                assert (qa.question, qa.answer) == (q, a)
                _check_fact(q, a)
        elif item.kind == "detailed":
            assert questions[0] in DETAILED_PROMPTS and answers == [detailed_caption(item.scenes[0])]
        elif item.kind == "conversation":
            assert len(item.qas) == len(users) >= 1 and len(set(users)) == len(users)
            for qa, q, a in zip(item.qas, questions, answers):
                if qa is None:  # the description turn
                    assert q in DETAILED_PROMPTS and a == detailed_caption(item.scenes[0])
                else:
                    assert (q, a) == (qa.question, qa.sentence) and qa.answer == _truth(item.scenes, q)
        elif item.sample["source"].endswith("/choice"):
            options = dict(re.findall(r"^([A-D])\. (.+)$", questions[0], re.M))
            assert options[answers[0]] == _truth(item.scenes, item.qas[0].question)
        else:  # short answers, each question with the response-format prompt
            assert len(item.qas) == len(users) >= 1 and len(set(users)) == len(users)
            for qa, q, a in zip(item.qas, questions, answers):
                assert q == f"{qa.question}\nAnswer the question using a single word or phrase."
                assert a == qa.answer == _truth(item.scenes, qa.question)
        checked.add(item.sample["source"])
    assert len(checked) == 6


def test_existing_splits_unchanged(tmp_path):
    summary = build_world(tmp_path / "world", seed=0, size="tiny", image_size=64)
    assert {s: v["content_hash"] for s, v in summary["splits"].items()} == TINY_HASHES
    assert WORLD_VERSION == 3  # the zoo's cache key holds it: the split must not need a bump


def test_built_on_demand_beside_an_existing_world(tmp_path):
    data = DataConfig(synthetic={"size": "tiny", "image_size": 32})
    work = WorkDir.at(tmp_path)
    before = ensure_splits(data, work)
    world = before["instruct"].rsplit("/", 1)[0]
    files = {p: p.read_bytes() for p in sorted((tmp_path / "data").rglob("*")) if p.is_file()}
    assert not any(M.SPLIT in str(p) for p in files)  # a plain world doesn't build it

    data = DataConfig(synthetic={"size": "tiny", "image_size": 32},
                      splits={"captions": "captions_short", "instruct": M.SPLIT})
    dirs = ensure_splits(data, work)
    assert dirs["captions"] == before["captions"]
    assert dirs["instruct"] == f"{world}/{M.SPLIT}-v{M.VERSION}"
    assert read_manifest(dirs["instruct"])["content_hash"] == \
        M.build_llava_mix(tmp_path / "direct", seed=0, size="tiny", image_size=32)["content_hash"]
    # every file of the world is as it was: nothing rebuilt, world.json untouched
    assert all(p.read_bytes() == b for p, b in files.items())
    assert M.SPLIT not in json.loads((tmp_path / "data" / world.rsplit("/", 1)[1] / "world.json").read_text())["splits"]
    stamp = (Path(dirs["instruct"]) / "manifest.json").stat().st_mtime_ns
    assert ensure_splits(data, work) == dirs  # present: not built again
    assert (Path(dirs["instruct"]) / "manifest.json").stat().st_mtime_ns == stamp


def test_a_variant_names_it_in_data_splits():
    cfg = resolve({"name": "mix", "recipe": "base",
                   "data": {"splits": {"captions": "captions_short", "instruct": M.SPLIT}}})
    assert cfg.recipe.stages[1].split == "instruct" and cfg.data.splits["instruct"] == M.SPLIT
