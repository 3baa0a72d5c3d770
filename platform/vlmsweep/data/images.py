"""Reading one ingested image: confined to the image folder and bounded before it is read.

Image paths come from an untrusted JSON file. Before a byte is read, a path is resolved
(symlinks included) and must land inside the image folder; the file must be a regular file
(a FIFO would block the open forever, a device never ends, a directory is no image) and at
most `max_bytes` long. Its header's width × height must be within `max_pixels` before PIL
decodes a single pixel. Each refusal is a `Skip` carrying the kind the ingest report counts
it under.
"""

from __future__ import annotations

import io
import os
import stat
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

# LLaVA image files are a few hundred KB; 64 MiB leaves room for large lossless scans while
# bounding what one record can make us read into memory.
DEFAULT_MAX_IMAGE_BYTES = 64 << 20
# PIL's own default threshold (1024**3 // 4 // 3 = 89,478,485 pixels, about 0.25 GiB decoded
# as RGB; a 9459×9459 square). Vision towers resize to 336-384 px, so a bigger image is a
# mistake or a decompression bomb. Kept as our own number so it is explicit and configurable.
DEFAULT_MAX_IMAGE_PIXELS = 1024 ** 3 // 4 // 3

# Names fit the CLI's 21-character kind column.
IMAGE_SKIP_KINDS = ("missing_image", "unreadable_image", "image_outside_root", "image_not_a_file",
                    "image_file_too_large", "image_too_many_pixels")


class Skip(Exception):
    """A sample that can't be ingested: `kind` is what it's counted under, `reason` the detail."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def confined_path(root: Path, rel: str) -> Path:
    """The real path of `rel` inside `root` (itself a real path), resolving symlinks without
    opening anything. Skip("image_outside_root") for an absolute path or one that leaves root."""
    if os.path.isabs(rel):
        raise Skip("image_outside_root", f"image path {rel!r} is absolute; image paths must be "
                   "relative to the image folder")
    try:
        real = Path(os.path.realpath(root / rel))
    except (OSError, ValueError) as e:  # NUL in the path, ...
        raise Skip("unreadable_image", f"image path {rel!r} can't be resolved: {e}") from None
    if not real.is_relative_to(root):
        raise Skip("image_outside_root", f"image {rel!r} resolves to {str(real)!r}, outside the "
                   f"image folder {str(root)!r}")
    return real


def _check_file(st: os.stat_result, shown: str, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (FIFO, device, socket)"
        raise Skip("image_not_a_file", f"image {shown!r} is {what}")
    if st.st_size > max_bytes:
        raise Skip("image_file_too_large", f"image {shown!r} is {st.st_size:,} bytes, over the "
                   f"limit of {max_bytes:,}")


def read_confined(real: Path, shown: str, max_bytes: int) -> bytes:
    """The bytes of the regular file at `real` (from confined_path), at most max_bytes of them.
    Type and size are checked with stat before the open, and again on the opened descriptor
    in case the path changed in between; O_NONBLOCK keeps even that case from hanging."""
    try:
        _check_file(os.stat(real), shown, max_bytes)
    except (FileNotFoundError, NotADirectoryError):
        raise Skip("missing_image", f"image {shown!r} not found") from None
    except OSError as e:  # permissions, symlink loop, ...
        raise Skip("unreadable_image", f"image {shown!r} can't be read: {e}") from None
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except OSError as e:
        raise Skip("unreadable_image", f"image {shown!r} can't be read: {e}") from None
    with os.fdopen(fd, "rb") as f:
        _check_file(os.fstat(f.fileno()), shown, max_bytes)
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew after the fstat
        raise Skip("image_file_too_large", f"image {shown!r} is over the limit of {max_bytes:,} bytes")
    return data


@contextmanager
def _only_our_pixel_limit():
    """PIL's global MAX_IMAGE_PIXELS warns (and past twice it, refuses) inside Image.open,
    before our limit is consulted, so it is set aside while we check ours explicitly.
    Ingestion decodes on one thread, so the swap can't leak into other decoding."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def decode_problem(data: bytes, max_pixels: int) -> tuple[str, str] | None:
    """None if `data` is an image of at most max_pixels that PIL verifies and fully decodes,
    else (skip kind, reason). The pixel count comes from the header, before any decoding."""
    if not data:
        return "unreadable_image", "is an empty file"
    try:
        with _only_our_pixel_limit():
            with Image.open(io.BytesIO(data)) as im:  # parses the header only
                width, height = im.size
                if width * height > max_pixels:
                    return "image_too_many_pixels", (f"is {width}×{height} = {width * height:,} "
                                                     f"pixels, over the limit of {max_pixels:,}")
                im.verify()
            with Image.open(io.BytesIO(data)) as im:
                im.load()
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        return "unreadable_image", f"can't be decoded: {type(e).__name__}: {e}"
    return None
