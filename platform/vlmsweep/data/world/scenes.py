"""Scenes of coloured shapes: sampling (pure data) and rendering (Pillow -> PNG bytes).

A scene is the single source of truth: captions and answers are derived from it, and
every object's position name is derived from where it is actually drawn.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import asdict, dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

KINDS = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (240, 220, 40), "purple": (140, 60, 180), "orange": (245, 140, 30),
    "white": (250, 250, 250), "black": (15, 15, 15),
}
# Each background excludes the object colours that would be hard to see on it.
BACKGROUNDS = {
    "gray": ((128, 128, 128), ()),
    "beige": ((225, 215, 185), ("white", "yellow")),
    "navy": ((25, 35, 90), ("black", "blue", "purple")),
    "teal": ((40, 120, 120), ("green", "blue")),
}
# Object diameter as a fraction of the image side; a 3x3 grid cell is 1/3, so even a
# large object fits in its cell and objects never overlap.
SIZES = {"small": 0.16, "medium": 0.23, "large": 0.30}
WORDS = ("cat", "dog", "sun", "hat", "book", "moon", "fish", "cake", "bird", "lamp", "kite", "tree")
WORD_PROB = 0.3
MIN_IMAGE, MAX_IMAGE = 32, 384


@dataclass(frozen=True)
class Obj:
    kind: str
    colour: str
    size: str
    x: float  # centre, in pixels of the final image
    y: float
    position: str  # derived from (x, y) by position_name


@dataclass(frozen=True)
class Scene:
    image_size: int
    background: str
    objects: tuple[Obj, ...]
    word: str | None = None  # drawn centred in the bottom third when present

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> Scene:
        return Scene(d["image_size"], d["background"], tuple(Obj(**o) for o in d["objects"]),
                     d.get("word"))


def position_name(x: float, y: float, image_size: int) -> str:
    """'top left', 'top', ..., 'centre', ... from a point: the image split in thirds."""
    third = image_size / 3
    col = "left" if x < third else "right" if x >= 2 * third else ""
    row = "top" if y < third else "bottom" if y >= 2 * third else ""
    return " ".join(p for p in (row, col) if p) or "centre"


def max_objects(image_size: int) -> int:
    """Bigger images can show more objects legibly."""
    return 3 if image_size < 48 else 5 if image_size < 96 else 6 if image_size < 192 else 8


def object_limit(image_size: int, word: bool) -> int:
    """Most objects a scene may hold: one per free grid cell (the word takes a row)."""
    return min(max_objects(image_size), 6 if word else 9)


def check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or not MIN_IMAGE <= image_size <= MAX_IMAGE:
        raise ValueError(f"image_size must be an int in [{MIN_IMAGE}, {MAX_IMAGE}], got {image_size!r}")


def sample_scene(rng: random.Random, image_size: int, *, n_objects: int | None = None,
                 word: bool | None = None) -> Scene:
    """Draw a scene; `n_objects` / `word` force those choices (e.g. for reading questions)."""
    check_image_size(image_size)
    has_word = rng.random() < WORD_PROB if word is None else word
    background = rng.choice(sorted(BACKGROUNDS))
    colours = [c for c in COLOURS if c not in BACKGROUNDS[background][1]]
    # The word owns the bottom third, so word scenes put objects in the top two rows only.
    cells = [(c, r) for r in range(2 if has_word else 3) for c in range(3)]
    limit = object_limit(image_size, has_word)
    n = rng.randint(1, limit) if n_objects is None else n_objects
    if not 1 <= n <= limit:
        raise ValueError(f"n_objects must be in [1, {limit}] for this scene, got {n}")
    cell = image_size / 3
    objects = []
    for col, row in sorted(rng.sample(cells, n), key=lambda cr: (cr[1], cr[0])):
        # Reuse an earlier kind sometimes so counting questions have answers above one.
        kind = rng.choice([o.kind for o in objects]) if objects and rng.random() < 0.35 \
            else rng.choice(KINDS)
        size = rng.choice(list(SIZES))
        slack = (cell - SIZES[size] * image_size) / 2 * 0.8  # jitter that stays in the cell
        x = (col + 0.5) * cell + rng.uniform(-slack, slack)
        y = (row + 0.5) * cell + rng.uniform(-slack, slack)
        objects.append(Obj(kind, rng.choice(colours), size, round(x, 2), round(y, 2),
                           position_name(x, y, image_size)))
    return Scene(image_size, background, tuple(objects), rng.choice(WORDS) if has_word else None)


# ---- rendering -------------------------------------------------------------------------

def _supersample(image_size: int) -> int:
    # Draw big then box-downsample: antialiased edges, cheap for small images, and
    # skipped at the largest sizes where edges are already smooth enough.
    return max(1, min(4, 256 // image_size))


def _shape_points(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if kind == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    if kind == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if kind == "cross":
        w = r * 0.34
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
                (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
                (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(f"no polygon for kind {kind!r}")


@lru_cache(maxsize=64)
def _font(px: int):
    try:
        return ImageFont.load_default(size=px)  # scalable when Pillow has FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


@lru_cache(maxsize=512)
def _word_mask(word: str, width: int, height: int) -> Image.Image:
    """An 'L' mask of the word as large as fits in width x height, centred."""
    lo, hi, best = 4, max(4, height * 2), None
    while lo <= hi:  # binary search on font size for the largest that fits
        mid = (lo + hi) // 2
        font = _font(mid)
        l, t, r, b = font.getbbox(word)
        if r - l <= width and b - t <= height:
            best, lo = (font, (l, t, r, b)), mid + 1
        else:
            hi = mid - 1
    mask = Image.new("L", (width, height), 0)
    if best is None:
        return mask
    font, (l, t, r, b) = best
    if not isinstance(font, ImageFont.FreeTypeFont):
        # Bitmap fallback font has one size: draw it natively, then scale it up.
        glyph = Image.new("L", (r - l, b - t), 0)
        ImageDraw.Draw(glyph).text((-l, -t), word, fill=255, font=font)
        scale = min(width / glyph.width, height / glyph.height)
        glyph = glyph.resize((max(1, int(glyph.width * scale)), max(1, int(glyph.height * scale))),
                             Image.NEAREST)
        mask.paste(glyph, ((width - glyph.width) // 2, (height - glyph.height) // 2))
        return mask
    ImageDraw.Draw(mask).text(((width - (r - l)) / 2 - l, (height - (b - t)) / 2 - t), word,
                              fill=255, font=font)
    return mask


def render(scene: Scene) -> Image.Image:
    """The scene as an RGB image of scene.image_size pixels square."""
    ss = _supersample(scene.image_size)
    side = scene.image_size * ss
    bg = BACKGROUNDS[scene.background][0]
    img = Image.new("RGB", (side, side), bg)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        cx, cy, r = o.x * ss, o.y * ss, SIZES[o.size] * side / 2
        fill = COLOURS[o.colour]
        if o.kind == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif o.kind == "square":
            h = r * 0.85  # a square as wide as the circle looks bigger; even them out
            draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
        else:
            draw.polygon(_shape_points(o.kind, cx, cy, r), fill=fill)
    if scene.word:
        band = side // 3
        pad = max(1, side // 32)
        mask = _word_mask(scene.word, side - 2 * pad, band - 2 * pad)
        # Dark text on light backgrounds and vice versa, for legibility.
        ink = (0, 0, 0) if sum(bg) > 3 * 128 else (255, 255, 255)
        img.paste(ink, (pad, side - band + pad), mask)
    if ss > 1:
        img = img.reduce(ss)  # box filter: exact area average, no ringing
    return img


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def render_png(scene: Scene) -> bytes:
    return encode_png(render(scene))
