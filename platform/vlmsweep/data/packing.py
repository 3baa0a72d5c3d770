"""Packing samples into fixed-length rows, and collating rows into tensors.

Packing is sequential: samples go into the current row in stream order until the next one
doesn't fit. That costs at most one sample's worth of padding per row, and makes the data
position exact — a row ends at a known stream position, so a resumed stage continues
from the first sample after the last row that was trained on, never repeating or skipping.

Each sample's targets are shifted inside the sample (targets[t] = labels[t + 1]), so the
last token of one sample never learns to predict the first token of the next.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from vlmsweep.models.vlm import IGNORE_INDEX


@dataclass
class Sample:
    id: str
    input_ids: np.ndarray
    labels: np.ndarray
    pixel_values: np.ndarray  # [n_images, 3, H, W] (n may be 0)
    # stream position of this sample: (epoch, index in the epoch, rows passed overall)
    position: tuple[int, int, int] = (0, 0, 0)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Row:
    samples: list[Sample] = field(default_factory=list)

    @property
    def length(self) -> int:
        return sum(len(s) for s in self.samples)

    @property
    def images(self) -> int:
        return sum(len(s.pixel_values) for s in self.samples)

    @property
    def end_position(self) -> tuple[int, int, int]:
        return self.samples[-1].position


def pack(samples: Iterable[Sample], max_length: int, max_images: int, packing: bool = True) -> Iterator[Row]:
    """Rows of at most max_length tokens and max_images images (one sample per row if not packing)."""
    row = Row()
    for sample in samples:
        fits = (packing and row.length + len(sample) <= max_length
                and row.images + len(sample.pixel_values) <= max_images)
        if row.samples and not fits:
            yield row
            row = Row()
        row.samples.append(sample)
    if row.samples:
        yield row


def shifted_targets(labels: np.ndarray) -> np.ndarray:
    out = np.full_like(labels, IGNORE_INDEX)
    out[:-1] = labels[1:]
    return out


@dataclass
class Batch:
    input_ids: torch.Tensor
    targets: torch.Tensor
    position_ids: torch.Tensor
    pixel_values: torch.Tensor | None
    attention_mask: torch.Tensor | None
    real_tokens: int      # non-pad positions (text and image)
    total_tokens: int     # positions including padding
    samples: int
    target_tokens: int

    def to(self, device) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.input_ids), move(self.targets), move(self.position_ids), move(self.pixel_values),
                     move(self.attention_mask), self.real_tokens, self.total_tokens, self.samples, self.target_tokens)


def collate(rows: list[Row], pad_id: int, length: int | None = None, image_shape: tuple[int, ...] | None = None) -> Batch:
    """Stack rows into tensors, right-padded to `length` (default: the longest row).

    A row of several samples gets position ids restarting at 0 per sample and no
    attention mask (the model derives a block-diagonal causal mask from the positions);
    padding is a block of its own with no targets. Rows of one sample each (unpacked)
    get an ordinary 2-D attention mask instead, as LLaVA's pad-to-longest batches do.
    """
    packed = any(len(r.samples) > 1 for r in rows)
    length = length or max(r.length for r in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    targets = np.full((len(rows), length), IGNORE_INDEX, dtype=np.int64)
    positions = np.zeros((len(rows), length), dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    pixels = []
    for b, row in enumerate(rows):
        at = 0
        for s in row.samples:
            n = len(s)
            ids[b, at:at + n] = s.input_ids
            targets[b, at:at + n] = shifted_targets(s.labels)
            positions[b, at:at + n] = np.arange(n)
            mask[b, at:at + n] = 1
            pixels.extend(s.pixel_values)
            at += n
        positions[b, at:] = np.arange(length - at)
    real = int(mask.sum())
    if pixels:
        pixel_values = torch.from_numpy(np.stack(pixels))
    elif image_shape is not None:
        pixel_values = torch.zeros((0, *image_shape))
    else:
        pixel_values = None
    return Batch(torch.from_numpy(ids), torch.from_numpy(targets), torch.from_numpy(positions), pixel_values,
                 None if packed else torch.from_numpy(mask), real_tokens=real, total_tokens=ids.size,
                 samples=sum(len(r.samples) for r in rows),
                 target_tokens=int((targets != IGNORE_INDEX).sum()))


def left_pad(prompts: list[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts for batched generation: left-padded ids and the attention mask.

    Left padding keeps every prompt's last token at the end, where generation continues;
    transformers derives position ids from the mask, so padding shifts nothing.
    """
    length = max(len(p) for p in prompts)
    ids = np.full((len(prompts), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), length), dtype=np.int64)
    for i, p in enumerate(prompts):
        ids[i, length - len(p):] = p
        mask[i, length - len(p):] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)
