"""Assemble the world's three datasets and write them as shard dirs.

Every item draws from its own `random.Random(f"{seed}/{split}/{index}")`, so an item
depends only on (seed, index, image_size): builds are reproducible, any item can be
regenerated alone (tests do this to check answers against scenes), and a bigger size is
a superset of a smaller one's captions.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vlmsweep.config.errors import ConfigError, did_you_mean

from ..shards import IMAGE_MARKER, ShardWriter
from . import questions as Q
from .language import caption_conversation
from .llava_json import IMAGES, export_llava
from .scenes import (MAX_IMAGE, MIN_IMAGE, WORD_PROB, Scene, max_objects, object_limit,
                     render_png, sample_scene)

# (caption scenes, instruct samples) per size.
WORLD_SIZES = {"tiny": (256, 384), "small": (2_000, 3_000), "medium": (20_000, 30_000)}
# Shares of the instruct mix, roughly LLaVA-665K's spread of short-answer VQA,
# conversations, multiple choice, OCR, image descriptions and text-only dialogue.
MIX = {"vqa": 0.18, "yes_no": 0.12, "count": 0.12, "choice": 0.12, "ocr": 0.08,
       "conversation": 0.12, "describe": 0.06, "multi_image": 0.10, "text_only": 0.10}
# A world can be built with another mix (data.synthetic.mix): the same kinds, other shares. A
# kind's share is its weight over the weights' sum; a kind left out gets none.
MIX_FIELD = "data.synthetic.mix"
# instruct_detailed is instruct with the "describe" answers swapped for detailed captions,
# as ShareGPT4V's SFT mix swaps its captions into LLaVA-665K; every other row is identical.
SPLITS = ("captions_short", "captions_detailed", "instruct", "instruct_detailed")
INSTRUCT_CAPTIONS = {"instruct": "short", "instruct_detailed": "detailed"}
SYSTEM_PROMPT = "You are a helpful assistant who answers questions about shapes and colours."


@dataclass
class Item:
    """One sample plus what it was made from, so tests can re-derive its answers."""
    sample: dict
    scenes: list[Scene] = field(default_factory=list)
    qas: list[Q.QA] = field(default_factory=list)
    kind: str = ""


def mix_problems(mix: dict | None) -> list[tuple[str, str]]:
    """What is wrong with a data.synthetic.mix: unknown kinds, weights that aren't numbers >= 0,
    nothing left to draw."""
    if mix is None:
        return []
    if not isinstance(mix, dict):
        return [(MIX_FIELD, f"must map kinds to weights, got {mix!r}")]
    problems = [(f"{MIX_FIELD}.{k}", "not a kind: YAML reads an unquoted yes, no, on or off as a boolean; quote it")
                for k in mix if isinstance(k, bool)]
    problems += [(f"{MIX_FIELD}.{k}", f"unknown instruct kind{did_you_mean(k, MIX)}; allowed: {', '.join(MIX)}")
                 for k in mix if k not in MIX and not isinstance(k, bool)]
    problems += [(f"{MIX_FIELD}.{k}", f"must be a number >= 0, got {w!r}") for k, w in mix.items()
                 if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0]
    if not problems and not sum(mix.values()) > 0:
        problems.append((MIX_FIELD, "every weight is 0: the instruct split would be empty"))
    return problems


def normal_mix(mix: dict | None) -> dict[str, float] | None:
    """A mix as shares summing to 1, kinds with weight 0 left out, in MIX's order; None for the
    default mix however it is written, so a world built with it is the default world."""
    if mix is None:
        return None
    problems = mix_problems(mix)
    if problems:
        raise ConfigError(problems)
    total = sum(mix.values())
    shares = {k: round(mix[k] / total, 9) for k in MIX if mix.get(k, 0) > 0}
    default = {k: round(w / sum(MIX.values()), 9) for k, w in MIX.items()}
    return None if shares == default else shares


def check_args(seed, size, image_size, mix: dict | None = None) -> None:
    problems = mix_problems(mix)
    if size not in WORLD_SIZES:
        problems.append(("data.size", f"unknown size {size!r}; allowed: {', '.join(WORLD_SIZES)}"))
    if isinstance(image_size, bool) or not isinstance(image_size, int) \
            or not MIN_IMAGE <= image_size <= MAX_IMAGE:
        problems.append(("data.image_size",
                         f"must be an int in [{MIN_IMAGE}, {MAX_IMAGE}], got {image_size!r}"))
    if isinstance(seed, bool) or not isinstance(seed, int):
        problems.append(("data.seed", f"must be an int, got {seed!r}"))
    if problems:
        raise ConfigError(problems)


def _rng(seed: int, split: str, index: int | str) -> random.Random:
    # String seeds hash with sha512 inside random: stable across runs and PYTHONHASHSEED.
    return random.Random(f"{seed}/{split}/{index}")


# ---- captions --------------------------------------------------------------------------

def caption_scene(seed: int, index: int, image_size: int) -> Scene:
    return sample_scene(_rng(seed, "scene", index), image_size)


def caption_items(seed: int, n: int, image_size: int) -> Iterator[tuple[Item, Item]]:
    """(short, detailed) caption items for scenes 0..n-1; both share one rendered image."""
    for i in range(n):
        scene = caption_scene(seed, i, image_size)
        png = render_png(scene)
        rng = _rng(seed, "caption", i)
        pair = []
        for quality in ("short", "detailed"):
            sample = {"id": f"cap-{i:06d}", "images": [png],
                      "conversations": caption_conversation(scene, rng, quality, IMAGE_MARKER),
                      "source": f"world/captions_{quality}", "modality": "image"}
            pair.append(Item(sample, [scene], kind=f"caption_{quality}"))
        yield pair[0], pair[1]


# ---- instruct mix ----------------------------------------------------------------------

def plan_kinds(mix: dict[str, float], n: int, shuffle_seed: str) -> list[str]:
    """Exactly-proportioned kinds (largest remainder), shuffled: every kind appears even
    in tiny builds, and counts per source are known up front."""
    raw = {k: w * n / sum(mix.values()) for k, w in mix.items()}
    alloc = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: alloc[k] - raw[k])[: n - sum(alloc.values())]:
        alloc[k] += 1
    plan = [k for k in mix for _ in range(alloc[k])]
    random.Random(shuffle_seed).shuffle(plan)
    return plan


def instruct_plan(seed: int, n: int, mix: dict | None = None) -> list[str]:
    """The kind of each of the n instruct items (`mix`: a normal_mix, None for MIX)."""
    return plan_kinds(MIX if mix is None else mix, n, f"{seed}/instruct/plan")


def _image_turn(text: str, n_images: int = 1) -> dict:
    return {"role": "user", "text": f"{IMAGE_MARKER}\n" * n_images + text}


def _single_image(kind: str, scene: Scene, rng: random.Random) -> tuple[list[dict], list[Q.QA]]:
    if kind == "vqa":
        qa = Q.ask(Q.VQA, scene, rng)
        return [_image_turn(Q.short_answer_prompt(qa)), _say(qa.answer)], [qa]
    if kind == "yes_no":
        qa = Q.q_exists(scene, rng)
        return [_image_turn(Q.short_answer_prompt(qa)), _say(qa.answer)], [qa]
    if kind == "count":
        qa = Q.ask(Q.COUNT, scene, rng)
        return [_image_turn(Q.short_answer_prompt(qa)), _say(qa.answer)], [qa]
    if kind == "choice":
        qa = Q.ask(Q.CHOICE, scene, rng)
        prompt, letter, _ = Q.multiple_choice(qa, rng)
        return [_image_turn(prompt), _say(letter)], [qa]
    if kind == "ocr":
        qa = Q.q_word(scene, rng)
        return [_image_turn(Q.short_answer_prompt(qa)), _say(qa.answer)], [qa]
    if kind == "conversation":
        # 2-3 different question kinds, full-sentence answers, <image> only in turn one.
        qas, target = [], rng.randint(2, 3)
        for gen in rng.sample(Q.CONVERSATION, len(Q.CONVERSATION)):
            qa = gen(scene, rng)
            if qa is not None:
                qas.append(qa)
            if len(qas) == target:
                break
        turns = []
        for j, qa in enumerate(qas):
            turns += [_image_turn(qa.question) if j == 0 else {"role": "user", "text": qa.question},
                      _say(qa.sentence)]
        return turns, qas
    raise ValueError(f"unknown single-image kind {kind!r}")


def _say(text: str) -> dict:
    return {"role": "assistant", "text": text}


def instruct_item(seed: int, index: int, kind: str, image_size: int,
                  captions: str = "short") -> Item:
    """Item `index` of the instruct mix; `captions` ("short" | "detailed") only changes the
    answer of a "describe" item, so instruct and instruct_detailed differ in those rows alone."""
    rng = _rng(seed, "instruct", index)
    sid, source = f"ins-{index:06d}", f"world/{kind}"
    if kind == "describe":
        scene = sample_scene(rng, image_size)
        return Item({"id": sid, "images": [render_png(scene)],
                     "conversations": caption_conversation(scene, rng, captions, IMAGE_MARKER),
                     "source": f"world/describe_{captions}", "modality": "image"}, [scene], [], kind)
    if kind == "text_only":
        gens = rng.sample(Q.TEXT_FACTS, rng.randint(1, 2))
        turns = [{"role": "system", "text": SYSTEM_PROMPT}] if rng.random() < 0.3 else []
        qas = []
        for gen in gens:
            fact = gen(rng)
            q, a = fact.question, fact.answer
            qas.append(Q.QA(gen.__name__.removeprefix("t_"), q, a, a))
            turns += [{"role": "user", "text": q}, _say(a)]
        return Item({"id": sid, "images": [], "conversations": turns, "source": source,
                     "modality": "text"}, [], qas, kind)
    if kind == "multi_image":
        a = sample_scene(rng, image_size)
        # The second scene gets a different object count so "which has more" always applies.
        word_b = rng.random() < WORD_PROB
        n_b = rng.choice([k for k in range(1, object_limit(image_size, word_b) + 1)
                          if k != len(a.objects)])
        b = sample_scene(rng, image_size, n_objects=n_b, word=word_b)
        qa = Q.ask_pair(a, b, rng)
        return Item({"id": sid, "images": [render_png(a), render_png(b)],
                     "conversations": [_image_turn(qa.question, 2), _say(qa.answer)],
                     "source": source, "modality": "multi_image"}, [a, b], [qa], kind)
    scene = sample_scene(rng, image_size, word=True if kind == "ocr" else None)
    turns, qas = _single_image(kind, scene, rng)
    return Item({"id": sid, "images": [render_png(scene)], "conversations": turns,
                 "source": source, "modality": "image"}, [scene], qas, kind)


def instruct_items(seed: int, n: int, image_size: int, captions: str = "short",
                   mix: dict | None = None) -> Iterator[Item]:
    for i, kind in enumerate(instruct_plan(seed, n, normal_mix(mix))):
        yield instruct_item(seed, i, kind, image_size, captions)


# ---- build -----------------------------------------------------------------------------

def build_world(out_dir: str | Path, *, seed: int = 0, size: str = "tiny",
                image_size: int = 64, mix: dict | None = None) -> dict:
    """Write captions_short/, captions_detailed/, instruct/, instruct_detailed/ and world.json
    under out_dir,
    plus llava/<split>.json and llava/images/ (the same data in LLaVA's JSON format).

    Returns the world.json summary (seed, size, image_size, per-split rows, hashes and
    counts per source; the mix when it isn't the default). Raises ConfigError for an unknown
    size, a bad image size or a bad mix.
    """
    check_args(seed, size, image_size, mix)
    mix = normal_mix(mix)
    n_captions, n_instruct = WORLD_SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "world.json").unlink(missing_ok=True)  # present only once every split is whole
    world = {"seed": seed, "size": size, "image_size": image_size, **({"mix": mix} if mix else {})}
    writers = {s: ShardWriter(out / s) for s in SPLITS}
    sources = {s: Counter() for s in SPLITS}
    question_kinds = Counter()

    def add(split: str, item: Item) -> None:
        writers[split].add(item.sample)
        sources[split][item.sample["source"]] += 1
        if split == "instruct":  # instruct_detailed asks the same questions
            question_kinds.update(qa.kind for qa in item.qas)

    for short, detailed in caption_items(seed, n_captions, image_size):
        add("captions_short", short)
        add("captions_detailed", detailed)
    for i, kind in enumerate(instruct_plan(seed, n_instruct, mix)):
        for split, captions in INSTRUCT_CAPTIONS.items():
            # Only "describe" items depend on the caption quality; don't render the rest twice.
            if captions == "short" or kind == "describe":
                item = instruct_item(seed, i, kind, image_size, captions)
            add(split, item)

    splits = {}
    for s in SPLITS:
        m = writers[s].close({"split": s, "world": world, "sources": dict(sorted(sources[s].items()))})
        splits[s] = {"rows": m["rows"], "content_hash": m["content_hash"],
                     "modalities": m["modalities"], "sources": m["sources"]}
    # The same data as LLaVA JSON + image folder, for LLaVA-style loaders and people.
    llava = {"image_folder": f"llava/{IMAGES}",
             "splits": {s: str(export_llava(out / s, out / "llava").relative_to(out)) for s in SPLITS}}
    summary = {**world, "max_objects": max_objects(image_size), "splits": splits,
               "sources": dict(sorted(sum(sources.values(), Counter()).items())),
               "question_kinds": dict(sorted(question_kinds.items())), "llava": llava}
    # The held-out benchmark sets are built by the layer above, through the benchmark registry
    # (vlmsweep.eval.world_sets), under this directory: each benchmark's builder lives with it.
    tmp = out / f".world.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "world.json")
    return summary
