"""The zoo's DINOv2: DINO-style self-distillation on the world's images (no text), run inside
one Ray Train worker like the other zoo jobs (jobs.py); what differs from DINOv2's own recipe
is in spec.SelfDistillSpec's docstring."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import torch

from vlmsweep.data.shards import iter_samples

from .jobs import _family, _finish_vision, _optimizer, _setup, _step


class _ProjectionHead(torch.nn.Module):
    """DINO's head: an MLP to an L2-normalised bottleneck, then cosine scores against learned
    prototypes (DINO's weight-normalised last layer with its norm fixed at 1)."""

    def __init__(self, dim: int, hidden: int, bottleneck: int, prototypes: int):
        super().__init__()
        nn = torch.nn
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Parameter(torch.randn(prototypes, bottleneck) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.nn.functional.normalize(self.mlp(x), dim=-1)
        return z @ torch.nn.functional.normalize(self.prototypes, dim=-1).T


def _views(images: torch.Tensor, side: int, min_area: float, gen: torch.Generator) -> torch.Tensor:
    """A random square crop of each image (area share in [min_area, 1], anywhere inside it),
    resized to side × side: the geometric part of DINO's augmentation, as one grid_sample."""
    n = images.shape[0]
    scale = torch.empty(n).uniform_(min_area, 1.0, generator=gen).sqrt()  # side share
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - scale)[:, None]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = torch.nn.functional.affine_grid(theta, [n, 3, side, side], align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # ITU-R 601 luma, as PIL's "L"


def _colour(x: torch.Tensor, sd: dict, gen: torch.Generator) -> torch.Tensor:
    """DINOv2's colour augmentation of [0, 1] images without its hue shift: with probability
    jitter_p, random brightness, contrast and saturation factors in 1 ± jitter; then grayscale
    with probability gray_p. Hue is left alone: colour names are what the world's questions ask."""
    n = x.shape[0]

    def factor(amount: float) -> torch.Tensor:
        return 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * amount

    brightness, contrast, saturation = sd["jitter"]
    j = x * factor(brightness)
    mean = _gray(j).mean(dim=(2, 3), keepdim=True)
    j = (j - mean) * factor(contrast) + mean
    j = (j - _gray(j)) * factor(saturation) + _gray(j)
    x = torch.where(torch.rand(n, 1, 1, 1, generator=gen) < sd["jitter_p"], j.clamp(0, 1), x)
    return torch.where(torch.rand(n, 1, 1, 1, generator=gen) < sd["gray_p"], _gray(x).expand_as(x), x)


def _targets(teacher: torch.Tensor, center: torch.Tensor, sd: dict) -> torch.Tensor:
    """The teacher's centred (a running mean of its scores subtracted), sharpened (a low
    temperature) distribution over prototypes, per row."""
    return torch.softmax((teacher - center) / sd["teacher_temp"], dim=-1)


def _distill_loss(student: torch.Tensor, target: torch.Tensor, sd: dict) -> torch.Tensor:
    """Cross-entropy from the teacher's distribution to the student's, per row."""
    return -(target * torch.log_softmax(student / sd["student_temp"], dim=-1)).sum(-1)


def _koleo(x: torch.Tensor) -> torch.Tensor:
    """DINOv2's KoLeo regulariser: minus the mean log distance of each L2-normalised CLS feature
    to its nearest neighbour in the batch, which spreads the images apart."""
    x = torch.nn.functional.normalize(x, dim=-1)
    dist = torch.cdist(x, x) + torch.eye(len(x)) * 1e3  # never one's own neighbour
    return -torch.log(dist.min(dim=1).values + 1e-8).mean()


def _dinov2_model(spec: dict):
    from transformers import Dinov2Config, Dinov2Model

    return Dinov2Model(Dinov2Config(hidden_size=spec["hidden"], num_hidden_layers=spec["layers"],
                                    num_attention_heads=spec["heads"], mlp_ratio=2,
                                    image_size=spec["image_size"], patch_size=spec["patch_size"]))


def vision_self_distill(job: dict) -> dict:
    """Image-only pretraining of a DINOv2 by DINO + iBOT self-distillation on the world's images.

    Two random crops of each image go to the student (some with patches masked) and to an EMA
    teacher. The student learns to predict the teacher's prototype distribution for the other
    crop's CLS token and, where it saw a mask token, for the hidden patch; centring (a running
    mean of the teacher's scores, subtracted) and sharpening (a low teacher temperature)
    together keep the teacher from collapsing onto one prototype. The saved tower is the
    teacher's backbone, as DINO and DINOv2 release theirs. See spec.SelfDistillSpec for what
    this leaves out of DINOv2's recipe.
    """
    import copy

    import numpy as np
    from PIL import Image

    from vlmsweep.models.vision import preprocess_images

    started = time.time()
    spec = job["spec"]
    sd = spec["self_distill"]
    _setup(job)
    gen = torch.Generator().manual_seed(job["seed"])
    # the family's processor: BitImageProcessor with the ImageNet mean / std facebook/dinov2-* ship
    processor = _family(spec).tiny_processor(spec["image_size"])
    images = [Image.open(io.BytesIO(s["images"][0])).convert("RGB")
              for s in iter_samples(Path(job["world_dir"]) / "captions_short")]
    # what the tower sees once trained: the processor's pixels (also what centring averages)
    pixels = torch.from_numpy(preprocess_images(processor, images, "pad"))
    # views are cut and coloured from the full-resolution images, then normalised as the processor does
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (processor.image_mean, processor.image_std))
    full = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2) / 255

    student = _dinov2_model(spec)
    head = _ProjectionHead(spec["hidden"], sd["head_hidden"], sd["bottleneck"], sd["prototypes"])
    t_student, t_head = copy.deepcopy(student), copy.deepcopy(head)
    teacher = torch.nn.ModuleList([t_student, t_head]).requires_grad_(False).eval()
    both = torch.nn.ModuleList([student, head]).train()
    opt, sched = _optimizer(both, spec["lr"], spec["steps"])
    cls_center = torch.zeros(sd["prototypes"])
    patch_center = torch.zeros(sd["prototypes"])
    B, side, grid = spec["batch"], spec["image_size"], spec["image_size"] // spec["patch_size"]
    n_patches = grid * grid
    losses, usage = [], []
    for step in range(spec["steps"]):
        pick = torch.randperm(len(images), generator=gen)[:B]
        views = torch.cat([_views(full[pick], side, sd["crop_min_area"], gen) for _ in range(2)])  # [2B, ...]
        views = (_colour(views, sd, gen) - mean) / std
        # iBOT masks: a share of the student's images gets a random subset of its patches masked
        ratio = torch.empty(2 * B).uniform_(*sd["mask_ratio"], generator=gen)
        ratio *= torch.rand(2 * B, generator=gen) < sd["mask_share"]
        masks = torch.rand(2 * B, n_patches, generator=gen) < ratio[:, None]
        with torch.no_grad():
            t_out = t_head(t_student(pixel_values=views).last_hidden_state)
        s_hidden = student(pixel_values=views, bool_masked_pos=masks).last_hidden_state
        s_out = head(s_hidden)
        # DINO: each view's CLS against the teacher's CLS of the other view of the same image
        t_cls = t_out[:, 0].view(2, B, -1).flip(0).reshape(2 * B, -1)
        cls_loss = _distill_loss(s_out[:, 0], _targets(t_cls, cls_center, sd), sd).mean()
        # iBOT: masked patches against the teacher's (unmasked) patch at the same place
        t_patch, s_patch = t_out[:, 1:], s_out[:, 1:]
        if masks.any():
            per_patch = _distill_loss(s_patch[masks], _targets(t_patch[masks], patch_center, sd), sd)
            # each image counts equally, however many of its patches were masked
            weight = (1 / masks.sum(1, keepdim=True).clamp(min=1)).expand_as(masks)[masks]
            patch_loss = (per_patch * weight).sum() / masks.any(1).sum()
        else:
            patch_loss = torch.zeros(())
        loss = cls_loss + patch_loss
        if sd["koleo"]:
            loss = loss + sd["koleo"] * sum(_koleo(c) for c in s_hidden[:, 0].chunk(2))  # per view, as DINOv2
        losses.append(_step(both, opt, sched, loss))
        with torch.no_grad():
            # the teacher follows the student ever more slowly (cosine from teacher_momentum to 1)
            m = 1 - (1 - sd["teacher_momentum"]) * (1 + math.cos(math.pi * step / spec["steps"])) / 2
            for tp, sp in zip(teacher.parameters(), both.parameters()):
                tp.lerp_(sp, 1 - m)
            c = sd["center_momentum"]
            cls_center.mul_(c).add_(t_out[:, 0].mean(0), alpha=1 - c)
            patch_center.mul_(c).add_(t_patch.reshape(-1, t_patch.shape[-1]).mean(0), alpha=1 - c)
            usage.append(int(t_out[:, 0].argmax(-1).unique().numel()))
    tail = max(1, len(usage) // 10)
    # the teacher's CLS argmax spread over the batch: 1 would mean collapse onto one prototype
    return _finish_vision(t_student, processor, pixels, job, losses, started, images=len(images),
                          objective="self_distill",
                          prototypes_used=round(sum(usage[-tail:]) / tail, 1))
