"""Words and captions for scenes. Everything is computed from the Scene, never stored."""

from __future__ import annotations

import random
from collections import Counter

from .scenes import Obj, Scene

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PLURALS = {"cross": "crosses"}  # the only irregular plural among KINDS

SHORT_PROMPTS = (
    "Describe the image briefly.",
    "Give a short caption for the image.",
    "Summarize the picture in a few words.",
    "Write a brief description of the image.",
)
DETAILED_PROMPTS = (
    "Describe the image in detail.",
    "Give a detailed description of the picture.",
    "Describe every object in the image, with its colour, size and position.",
    "What is in this image? Describe it thoroughly.",
)


def plural(kind: str) -> str:
    return PLURALS.get(kind, kind + "s")


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def count_phrase(n: int, noun: str, *, article: bool = True) -> str:
    """'a red circle' / 'one red circle', 'two red circles', 'no red circles'."""
    if n == 1:
        return f"{a_or_an(noun) if article else 'one'} {noun}"
    head, _, last = noun.rpartition(" ")  # only the last word takes the plural
    return f"{number_word(n)} {head + ' ' if head else ''}{plural(last)}"


def join_and(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def where(position: str) -> str:
    """A position name as a prepositional phrase: 'at the top left', 'on the left', 'in the centre'."""
    if position == "centre":
        return "in the centre"
    if position in ("left", "right"):
        return f"on the {position}"
    return f"at the {position}"


def a_or_an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def capitalise(s: str) -> str:
    return s[:1].upper() + s[1:]


def counts(scene: Scene, *, kind: str | None = None, colour: str | None = None,
           size: str | None = None) -> int:
    """How many objects match all the given attributes."""
    return sum(1 for o in scene.objects
               if (kind is None or o.kind == kind) and (colour is None or o.colour == colour)
               and (size is None or o.size == size))


def reference(scene: Scene, obj: Obj, *, avoid: str | None = None) -> str | None:
    """The shortest phrase that picks out obj alone ('the circle', 'the red circle',
    'the circle at the top left'), never using attribute `avoid` (the one being asked
    about). None when no such phrase is unique."""
    options = []
    if avoid != "kind":
        options.append((f"the {obj.kind}", {"kind": obj.kind}))
        if avoid != "colour":
            options.append((f"the {obj.colour} {obj.kind}", {"kind": obj.kind, "colour": obj.colour}))
        if avoid != "size":
            options.append((f"the {obj.size} {obj.kind}", {"kind": obj.kind, "size": obj.size}))
    for phrase, attrs in options:
        if counts(scene, **attrs) == 1:
            return phrase
    if avoid != "position":  # one object per grid cell, so a position is always unique
        return f"the {obj.kind} {where(obj.position)}" if avoid != "kind" \
            else f"the object {where(obj.position)}"
    return None


def _grouped(scene: Scene, key) -> list[tuple[tuple, int]]:
    # Groups in order of first appearance (objects are stored in reading order).
    c = Counter(key(o) for o in scene.objects)
    seen, out = set(), []
    for o in scene.objects:
        k = key(o)
        if k not in seen:
            seen.add(k)
            out.append((k, c[k]))
    return out


def short_caption(scene: Scene) -> str:
    """LLaVA-558K-style: just what is there. 'a red circle and two blue squares.'"""
    groups = _grouped(scene, lambda o: (o.colour, o.kind))
    return join_and([count_phrase(n, f"{colour} {kind}") for (colour, kind), n in groups]) + "."


def detailed_caption(scene: Scene) -> str:
    """ShareGPT4V-style: counts, then every object's colour, size and position, then the word."""
    n = len(scene.objects)
    sentences = [f"The image shows {count_phrase(n, 'object', article=False)} on "
                 f"{a_or_an(scene.background)} {scene.background} background."]
    kinds = _grouped(scene, lambda o: o.kind)
    if n > 1:
        sentences.append(f"There {'is' if kinds[0][1] == 1 else 'are'} "
                         + join_and([count_phrase(k, kind, article=False) for kind, k in kinds]) + ".")
    for o in scene.objects:
        sentences.append(f"{capitalise(a_or_an(o.size))} {o.size} {o.colour} {o.kind} "
                         f"is {where(o.position)}.")
    if scene.word:
        sentences.append(f'The word "{scene.word}" is written at the bottom.')
    return " ".join(sentences)


def caption_conversation(scene: Scene, rng: random.Random, quality: str,
                         image_marker: str = "<image>") -> list[dict]:
    if quality == "short":
        prompt, answer = rng.choice(SHORT_PROMPTS), short_caption(scene)
    elif quality == "detailed":
        prompt, answer = rng.choice(DETAILED_PROMPTS), detailed_caption(scene)
    else:
        raise ValueError(f"caption quality must be 'short' or 'detailed', got {quality!r}")
    return [{"role": "user", "text": f"{image_marker}\n{prompt}"},
            {"role": "assistant", "text": answer}]
