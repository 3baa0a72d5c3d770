"""What a chat is made of, without torch: turns, sampling settings, images read as ingestion
reads them, and the one-line error of a turn. `vlmsweep chat`'s parser imports this on every
CLI start, so it stays light; the model backends (serve/backends.py) load torch."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from vlmsweep.data.images import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS, decode_problem


class ChatError(Exception):
    """A problem with one turn (an image, a too long conversation): one line, the chat goes on."""


@dataclass
class Turn:
    role: str                      # "user" or "assistant"
    text: str
    images: list = field(default_factory=list)   # PIL images (user turns)


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0       # 0: greedy, as evaluation decodes
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def kwargs(self) -> dict:
        if self.greedy:
            return {"do_sample": False, "num_beams": 1}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "num_beams": 1}


def load_image(path: str) -> Image.Image:
    """An RGB image from a file, or ChatError with one line saying why not (limits as ingestion's)."""
    p = Path(path).expanduser()
    try:
        if not p.exists():
            raise ChatError(f"image {path!r}: no such file")
        if not p.is_file():
            raise ChatError(f"image {path!r}: {'a directory' if p.is_dir() else 'not a regular file'}, not an image")
        if p.stat().st_size > DEFAULT_MAX_IMAGE_BYTES:
            raise ChatError(f"image {path!r}: {p.stat().st_size:,} bytes, over the limit of "
                            f"{DEFAULT_MAX_IMAGE_BYTES:,}")
        data = p.read_bytes()
    except OSError as err:
        raise ChatError(f"image {path!r}: can't be read ({err.strerror or err})") from None
    problem = decode_problem(data, DEFAULT_MAX_IMAGE_PIXELS)
    if problem:
        reason = re.sub(r"UnidentifiedImageError: cannot identify image file <_io\.BytesIO object at 0x[0-9a-f]+>",
                        "not in an image format PIL reads", problem[1])
        raise ChatError(f"image {path!r}: {' '.join(reason.split())}")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")
