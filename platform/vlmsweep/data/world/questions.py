"""Questions about scenes (and about the world in general), each answer derived from the scene.

A generator takes (scene, rng) and returns a QA, or None when the question doesn't apply
to that scene (e.g. reading the word of a scene without one); callers try another kind.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .language import (a_or_an, capitalise, count_phrase, counts, number_word, plural,
                       reference, where)
from .scenes import BACKGROUNDS, COLOURS, KINDS, SIZES, Scene

# LLaVA-1.5's response-format prompts (appended to short-answer and multiple-choice data).
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
CHOICE_PROMPT = "Answer with the option's letter from the given choices directly."
LETTERS = "ABCD"


@dataclass(frozen=True)
class QA:
    kind: str       # which generator made it, e.g. "count_kind"
    question: str
    answer: str     # short answer: a word, phrase, number or Yes/No
    sentence: str   # the same answer as a full sentence, for conversations
    domain: tuple[str, ...] = ()  # every possible short answer, for multiple choice


def _be(n: int) -> str:
    return "is" if n == 1 else "are"


def q_colour(scene: Scene, rng: random.Random) -> QA | None:
    obj = rng.choice(scene.objects)
    ref = reference(scene, obj, avoid="colour")
    return QA("colour", f"What colour is {ref}?", obj.colour,
              f"{capitalise(ref)} is {obj.colour}.", tuple(COLOURS))


def q_shape_at(scene: Scene, rng: random.Random) -> QA | None:
    obj = rng.choice(scene.objects)
    return QA("shape_at", f"What shape is {where(obj.position)}?", obj.kind,
              f"The shape {where(obj.position)} is {a_or_an(obj.colour)} {obj.colour} {obj.kind}.",
              KINDS)


def q_size(scene: Scene, rng: random.Random) -> QA | None:
    obj = rng.choice(scene.objects)
    ref = reference(scene, obj, avoid="size")
    return QA("size", f"What size is {ref}?", obj.size, f"{capitalise(ref)} is {obj.size}.",
              tuple(SIZES))


def q_where(scene: Scene, rng: random.Random) -> QA | None:
    obj = rng.choice(scene.objects)
    ref = reference(scene, obj, avoid="position")
    if ref is None:
        return None
    return QA("where", f"Where is {ref}?", obj.position,
              f"{capitalise(ref)} is {where(obj.position)}.")


def q_background(scene: Scene, rng: random.Random) -> QA | None:
    return QA("background", "What colour is the background?", scene.background,
              f"The background is {scene.background}.", tuple(BACKGROUNDS))


def _present_or_not(rng: random.Random, present: list[str], universe, p_absent: float) -> str:
    absent = [x for x in universe if x not in present]
    return rng.choice(absent) if absent and rng.random() < p_absent else rng.choice(present)


def q_count_kind(scene: Scene, rng: random.Random) -> QA | None:
    kind = _present_or_not(rng, [o.kind for o in scene.objects], KINDS, 0.15)
    n = counts(scene, kind=kind)
    return QA("count_kind", f"How many {plural(kind)} are there?", str(n),
              f"There {_be(n)} {count_phrase(n, kind, article=False)}.")


def q_count_colour(scene: Scene, rng: random.Random) -> QA | None:
    colour = _present_or_not(rng, [o.colour for o in scene.objects], COLOURS, 0.15)
    n = counts(scene, colour=colour)
    return QA("count_colour", f"How many {colour} objects are there?", str(n),
              f"There {_be(n)} {count_phrase(n, colour + ' object', article=False)}.")


def q_count_all(scene: Scene, rng: random.Random) -> QA | None:
    n = len(scene.objects)
    return QA("count_all", rng.choice(["How many objects are there in the image?",
                                       "How many shapes are in the picture?"]), str(n),
              f"There {_be(n)} {count_phrase(n, 'object', article=False)} in the image.")


def q_exists(scene: Scene, rng: random.Random) -> QA | None:
    if rng.random() < 0.5:  # balanced yes/no, so "Yes" is never a free win
        obj = rng.choice(scene.objects)
        colour, kind = obj.colour, obj.kind
    else:
        absent = [(c, k) for c in COLOURS for k in KINDS if not counts(scene, colour=c, kind=k)]
        colour, kind = rng.choice(absent)
    n = counts(scene, colour=colour, kind=kind)
    noun = f"{colour} {kind}"
    question = f"Is there {a_or_an(colour)} {noun} in the image?"
    if n:
        return QA("exists", question, "Yes", f"Yes, there {_be(n)} {count_phrase(n, noun)}.")
    return QA("exists", question, "No", f"No, there is no {noun} in the image.")


def q_word(scene: Scene, rng: random.Random) -> QA | None:
    if not scene.word:
        return None
    return QA("word", rng.choice(["What word is written in the image?",
                                  "What does the text in the image say?"]), scene.word,
              f'The word "{scene.word}" is written at the bottom of the image.')


# Generators for short-answer VQA, and those that also work as multiple choice.
VQA = (q_colour, q_shape_at, q_size, q_where, q_background)
CHOICE = (q_colour, q_shape_at, q_size, q_background)
COUNT = (q_count_kind, q_count_colour, q_count_all)
CONVERSATION = (q_colour, q_shape_at, q_size, q_where, q_background, q_count_kind,
                q_count_colour, q_count_all, q_exists, q_word)


def ask(generators, scene: Scene, rng: random.Random) -> QA:
    """A QA from the first applicable generator, tried in random order."""
    for gen in rng.sample(list(generators), len(generators)):
        qa = gen(scene, rng)
        if qa is not None:
            return qa
    raise ValueError(f"no question among {[g.__name__ for g in generators]} applies to {scene}")


def short_answer_prompt(qa: QA) -> str:
    return f"{qa.question}\n{SHORT_ANSWER_PROMPT}"


def multiple_choice(qa: QA, rng: random.Random) -> tuple[str, str, list[str]]:
    """(prompt, letter, options): the right answer among up to 3 distractors from its domain."""
    others = [d for d in qa.domain if d != qa.answer]
    options = rng.sample(others, min(len(LETTERS) - 1, len(others))) + [qa.answer]
    rng.shuffle(options)
    lines = [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options)]
    prompt = "\n".join([qa.question, *lines, CHOICE_PROMPT])
    return prompt, LETTERS[options.index(qa.answer)], options


# ---- two images ------------------------------------------------------------------------

def _first_or_second(first: bool) -> str:
    return "first" if first else "second"


def q2_more_objects(a: Scene, b: Scene, rng: random.Random) -> QA | None:
    if len(a.objects) == len(b.objects):
        return None
    first = len(a.objects) > len(b.objects)
    return QA("more_objects", "Which image has more objects? Answer first or second.",
              _first_or_second(first), f"The {_first_or_second(first)} image has more objects.")


def q2_contains(a: Scene, b: Scene, rng: random.Random) -> QA | None:
    only = [(o.colour, o.kind) for s, t in ((a, b), (b, a)) for o in s.objects
            if not counts(t, colour=o.colour, kind=o.kind)]
    if not only:
        return None
    colour, kind = rng.choice(only)
    first = bool(counts(a, colour=colour, kind=kind))
    return QA("contains", f"Which image contains {a_or_an(colour)} {colour} {kind}? "
              "Answer first or second.", _first_or_second(first),
              f"The {_first_or_second(first)} image contains {a_or_an(colour)} {colour} {kind}.")


def q2_same_background(a: Scene, b: Scene, rng: random.Random) -> QA | None:
    same = a.background == b.background
    return QA("same_background", "Do the two images have the same background colour? "
              "Answer yes or no.", "Yes" if same else "No",
              "Yes, both backgrounds are " + a.background + "." if same else
              f"No, the first is {a.background} and the second is {b.background}.")


PAIR = (q2_more_objects, q2_contains, q2_same_background)


def ask_pair(a: Scene, b: Scene, rng: random.Random) -> QA:
    for gen in rng.sample(PAIR, len(PAIR)):
        qa = gen(a, b, rng)
        if qa is not None:
            return qa
    raise ValueError("no two-image question applies")  # same_background always applies


# ---- text only: general facts about the world's shapes and colours ---------------------

MIXES = {("red", "blue"): "purple", ("red", "yellow"): "orange",
         ("blue", "yellow"): "green", ("black", "white"): "gray"}  # paint mixing
SIDES = {"triangle": 3, "square": 4, "diamond": 4}
OPPOSITES = {"left": "right", "right": "left", "top": "bottom", "bottom": "top",
             "small": "large", "large": "small"}


@dataclass(frozen=True)
class TextFact:
    """A general fact as the world's text-only dialogues teach it, and how to check a reply to it
    (the text QA benchmark, eval/benchmarks/textqa): `key` is the word that makes a reply right,
    `domain` the words a reply to this kind of question answers with, right or wrong, and `pick`
    which of them in a reply is its answer (the last: "mixing red and blue gives purple"; the
    first: "a large star is bigger than a small star"). Numbers are digits in key and domain."""
    question: str
    answer: str
    key: str
    domain: tuple[str, ...]
    pick: str = "last"


_NUMBERS = tuple(str(n) for n in range(0, 21))
_PAINTS = tuple(sorted(set(COLOURS) | set(MIXES.values())))
_WORDS = tuple(sorted(set(KINDS) | {plural(k) for k in KINDS}))


def t_mix(rng: random.Random) -> TextFact:
    (x, y), z = rng.choice(sorted(MIXES.items()))
    x, y = rng.sample([x, y], 2)
    return TextFact(f"What colour do you get by mixing {x} and {y} paint?", f"Mixing {x} and {y} gives {z}.",
                    z, _PAINTS)


def t_sides(rng: random.Random) -> TextFact:
    kind = rng.choice([*SIDES, "circle"])
    if kind == "circle":
        return TextFact("How many corners does a circle have?", "A circle has no corners.", "0", _NUMBERS)
    n = rng.randint(1, 4)
    total = SIDES[kind] * n
    if n == 1:
        return TextFact(f"How many sides does {a_or_an(kind)} {kind} have?",
                        f"{capitalise(a_or_an(kind))} {kind} has {number_word(total)} sides.", str(total), _NUMBERS)
    return TextFact(f"How many sides do {number_word(n)} {plural(kind)} have altogether?",
                    f"{capitalise(number_word(n))} {plural(kind)} have {total} sides altogether.", str(total),
                    _NUMBERS)


def t_add(rng: random.Random) -> TextFact:
    kind = rng.choice(KINDS)
    c1, c2 = rng.sample(list(COLOURS), 2)
    a, b = rng.randint(1, 4), rng.randint(1, 4)
    return TextFact(f"A picture shows {count_phrase(a, f'{c1} {kind}', article=False)} and "
                    f"{count_phrase(b, f'{c2} {kind}', article=False)}. How many {plural(kind)} does it show?",
                    f"It shows {count_phrase(a + b, kind, article=False)}.", str(a + b), _NUMBERS)


def t_plural(rng: random.Random) -> TextFact:
    kind = rng.choice(KINDS)
    return TextFact(f'What is the plural of "{kind}"?', f'The plural of "{kind}" is "{plural(kind)}".',
                    plural(kind), _WORDS)


def t_opposite(rng: random.Random) -> TextFact:
    w = rng.choice(sorted(OPPOSITES))
    return TextFact(f"What is the opposite of {w}?", f"The opposite of {w} is {OPPOSITES[w]}.", OPPOSITES[w],
                    tuple(sorted(OPPOSITES)))


def t_bigger(rng: random.Random) -> TextFact:
    kind = rng.choice(KINDS)
    s1, s2 = rng.sample(list(SIZES), 2)
    big = max(s1, s2, key=SIZES.__getitem__)
    small = min(s1, s2, key=SIZES.__getitem__)
    return TextFact(f"Which is bigger: {a_or_an(s1)} {s1} {kind} or {a_or_an(s2)} {s2} {kind}?",
                    f"{capitalise(a_or_an(big))} {big} {kind} is bigger than {a_or_an(small)} {small} {kind}.",
                    big, tuple(sorted(SIZES)), pick="first")


TEXT_FACTS = (t_mix, t_sides, t_add, t_plural, t_opposite, t_bigger)
