"""How much of a training split is text-only: `data.text_only_ratio`, a data knob.

DeepSpeed-VisualChat mixes text-only instructions into its multimodal data so that the LLM
keeps its text ability; the share is worth sweeping (a grid axis such as
`data.text_only_ratio: [0.0, 0.1, 0.3]`). From a split's counts of text-only and image rows
(its manifest's `modalities`), `plan_mix` works out which fraction of each kind to keep so
that the text-only share of what is kept is the ratio: the larger kind is thinned, the other
kept whole (nothing is repeated, so a ratio above the split's own share costs image rows).

A row is kept when a hash of (seed, row id) falls below its kind's fraction. The choice thus
depends on the row alone, not on shards, ranks or reading order: a resumed stage sees the
same rows, every rank agrees, and another seed keeps other rows. The share is the ratio in
expectation; `MixCounts` says what a stage got. Rows that preparation skipped pass through,
whatever their kind, so that they are counted as skips.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class TextOnlyMix:
    ratio: float
    keep_text: float     # the fraction of text-only rows kept
    keep_image: float    # the fraction of rows with images kept
    seed: int

    def identity(self) -> dict:
        """What enters the stage id (the seed is there already)."""
        return {"text_only_ratio": self.ratio, "keep_text": round(self.keep_text, 9),
                "keep_image": round(self.keep_image, 9)}

    def keep_mask(self, table: pa.Table) -> np.ndarray:
        """Which prepared rows (stream.PREPARED_SCHEMA) stay: skipped rows always do."""
        ids = table.column("id").to_pylist()
        images = table.column("num_images").to_numpy(zero_copy_only=False)
        skipped = np.array([bool(r) for r in table.column("skip_reason").to_pylist()], dtype=bool)
        draw = np.fromiter((_unit(self.seed, i) for i in ids), dtype=np.float64, count=len(ids))
        limit = np.where(images == 0, self.keep_text, self.keep_image)
        return skipped | (draw < limit)

    def apply(self, table: pa.Table) -> pa.Table:
        return table.filter(pa.array(self.keep_mask(table), type=pa.bool_()))

    def expected_rows(self, modalities: dict, rows: int) -> int:
        """How many of a split's rows a stream keeps, in expectation (what an epoch is)."""
        text, image = _counts(modalities)
        return round(text * self.keep_text + image * self.keep_image + (rows - text - image))


def plan_mix(modalities: dict | None, ratio: float | None, seed: int) -> TextOnlyMix | None:
    """The mix that gives `ratio` on a split with these modality counts; None when there is
    nothing to mix (no ratio set, or the split holds one kind of row only: see `why_not`)."""
    if ratio is None or not modalities:
        return None
    text, image = _counts(modalities)
    if text == 0 or image == 0:     # one kind only: the ratio is met already, or can't be (why_not)
        return None
    if ratio <= text / (text + image):    # thin the text-only rows: k·text / (k·text + image) = ratio
        return TextOnlyMix(ratio, ratio * image / ((1 - ratio) * text), 1.0, seed)
    return TextOnlyMix(ratio, 1.0, text * (1 - ratio) / (ratio * image), seed)   # thin the image rows


def why_not(modalities: dict | None, ratio: float) -> str | None:
    """Why a ratio can't apply to a split (None when it can)."""
    if not modalities:
        return "its manifest has no modality counts"
    text, image = _counts(modalities)
    if text == 0:
        return None if ratio == 0 else "it has no text-only rows"
    if image == 0:
        return None if ratio == 1 else "it has no rows with images"
    return None


@dataclass
class MixCounts:
    """What a mix kept of a split's usable rows."""

    text_kept: int
    text_total: int
    image_kept: int
    image_total: int

    @classmethod
    def of(cls, table: pa.Table, mix: TextOnlyMix) -> MixCounts:
        keep = mix.keep_mask(table)
        usable = np.array([not r for r in table.column("skip_reason").to_pylist()], dtype=bool)
        text = usable & (table.column("num_images").to_numpy(zero_copy_only=False) == 0)
        image = usable & ~text
        return cls(int((keep & text).sum()), int(text.sum()), int((keep & image).sum()), int(image.sum()))

    @property
    def share(self) -> float:
        return self.text_kept / max(self.text_kept + self.image_kept, 1)

    def to_dict(self) -> dict:
        return {**asdict(self), "text_only_share": round(self.share, 4)}


def _counts(modalities: dict) -> tuple[int, int]:
    return modalities.get("text", 0), modalities.get("image", 0) + modalities.get("multi_image", 0)


def _unit(seed: int, row_id: str) -> float:
    """A uniform draw in [0, 1) fixed by (seed, row id)."""
    digest = hashlib.blake2b(f"{seed}\x00{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
