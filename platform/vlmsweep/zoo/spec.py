"""What the zoo builds: one spec per artifact, per zoo size, and the hash that caches it.

Every number that changes an artifact's bytes lives here, so an artifact's cache key is
just a hash of its spec (plus the world and, for models, the tokenizer's content hash).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

# Bumped when builder code changes in a way that changes outputs: old artifacts rebuild.
BUILDER_VERSION = 1
WORLD_IMAGE_SIZE = 64


@dataclass(frozen=True)
class LMSpec:
    name: str
    family: str            # key of models.llm.LLM_FAMILIES (config class + special tokens)
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    steps: int
    batch: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    # Mistral's sliding-window attention: each token sees itself and the window - 1 before it.
    # None = the family's default. Left out of the cache key when None (content_key), so
    # the LMs built before the field existed keep their keys.
    sliding_window: int | None = None


@dataclass(frozen=True)
class SelfDistillSpec:
    """A small DINO-style self-distillation: the image-only objective of the zoo's DINOv2.

    What it keeps from DINOv2 (Oquab et al. 2023): a student and an EMA teacher, each a
    backbone plus a projection head onto learned prototypes; the student matches the
    teacher's centred, sharpened distribution for the other view's CLS token (DINO loss) and
    for the patches it saw masked (iBOT loss); KoLeo spreads the student's CLS features; the
    teacher's backbone is what is kept. What differs, for CPU cost or for the world: two
    global views and no multi-crop local ones; DINO's running-mean centring, not Sinkhorn-Knopp
    (which kept 30-40 prototypes in use here but learned no better features); no teacher
    temperature warmup and one head for CLS and patches; random, not block-wise, masks; and
    of DINOv2's augmentations, crops, brightness / contrast / saturation jitter and grayscale,
    but no hue shift and no flips (the world's questions ask colour names and left / right),
    blur or solarisation. Colour jitter + KoLeo is what made the teacher use more than the
    4 prototypes that crops alone settled on (one per background colour).
    """
    prototypes: int = 256
    head_hidden: int = 128
    bottleneck: int = 64
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9
    teacher_momentum: float = 0.99   # EMA rate at step 0, cosine to 1 at the end (DINO's schedule)
    crop_min_area: float = 0.35      # a view is a random square crop of this share of the image or more
    jitter: tuple[float, float, float] = (0.4, 0.4, 0.2)  # brightness, contrast, saturation (DINOv2's)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    mask_ratio: tuple[float, float] = (0.1, 0.5)  # iBOT: the share of patches masked, drawn per image
    mask_share: float = 0.5          # iBOT: the share of student images that get masks
    koleo: float = 0.1               # weight of the KoLeo term (DINOv2's 0.1)


@dataclass(frozen=True)
class VisionSpec:
    name: str
    family: str            # key of models.vision.VISION_FAMILIES
    image_size: int
    patch_size: int
    hidden: int
    layers: int
    heads: int
    steps: int
    # image-caption pretraining (CLIP, SigLIP); None for an image-only objective (no text tower)
    text_hidden: int | None = 32  # the text tower is thrown away after pretraining: kept small
    text_layers: int | None = 2
    text_len: int | None = 24     # captions_short fit easily; SigLIP pools the last position, so pad to this
    batch: int = 32
    lr: float = 2e-3
    center_layer: int | None = -2  # make the features VLMs read (feature_layer -2) zero-mean: jobs.center_features
    # set: pretrain image-only by self-distillation (self_distill.vision_self_distill), not on captions
    self_distill: SelfDistillSpec | None = None

    @property
    def uses_text(self) -> bool:
        return self.self_distill is None


@dataclass(frozen=True)
class ZooSpec:
    size: str
    world_size: str
    vocab_size: int
    lms: tuple[LMSpec, ...]
    visions: tuple[VisionSpec, ...]
    seed: int = 0


def _zoo(size: str, world: str, vocab: int, lm_steps: int, vis_steps: int, scale: int) -> ZooSpec:
    # Sizes in the order of the paper's LLMs: TinyLlama 1.1B < StableLM-2 1.6B < Phi-2 2.7B
    # (< Mistral 7B, BakLLaVA's LLM).
    # Head width 16 throughout; TinyLlama uses GQA, StableLM-2 and Phi-2 full multi-head.
    h = 16 * scale
    lms = (
        LMSpec("tinyllama", "llama", hidden=4 * h, layers=2, heads=4 * scale, kv_heads=2 * scale,
               intermediate=10 * h, steps=lm_steps),
        LMSpec("stablelm", "stablelm", hidden=5 * h, layers=3, heads=5 * scale, kv_heads=5 * scale,
               intermediate=14 * h, steps=lm_steps),
        LMSpec("phi", "phi", hidden=6 * h, layers=4, heads=6 * scale, kv_heads=6 * scale,
               intermediate=24 * h, steps=lm_steps),
        # BakLLaVA's Mistral-7B, the largest: GQA 4:1 (32 query / 8 key-value heads), MLP 3.5×
        # hidden, and a sliding window half the trained context (4096 of 8192 in the original;
        # 64 of 128 here), so attention beyond the window is exercised, not just configured.
        LMSpec("mistral", "mistral", hidden=8 * h, layers=4, heads=8 * scale, kv_heads=2 * scale,
               intermediate=28 * h, steps=lm_steps, sliding_window=64),
    )
    # CLIP-L/14 at 336 px gives 576 patches, SigLIP-so400m at 384 px gives 729: SigLIP has
    # the higher resolution and the longer token sequence here too (36 vs 16 patches).
    # DINOv2 is there to be fused with SigLIP (Prismatic: DINOv2-L/14 and SigLIP-so400m/14
    # both at 224 px, 16x16 patches each, concatenated per patch), so its grid must equal
    # SigLIP's: 48 px / patch 8 = 6x6.
    visions = (
        VisionSpec("clip", "clip", image_size=32, patch_size=8, hidden=32 * scale, layers=4, heads=4,
                   steps=vis_steps),
        VisionSpec("siglip", "siglip", image_size=48, patch_size=8, hidden=32 * scale, layers=4, heads=4,
                   steps=vis_steps),
        VisionSpec("dinov2", "dinov2", image_size=48, patch_size=8, hidden=32 * scale, layers=4, heads=4,
                   steps=vis_steps, text_hidden=None, text_layers=None, text_len=None,
                   self_distill=SelfDistillSpec()),
    )
    return ZooSpec(size, world, vocab, lms, visions)


ZOO_SIZES = {
    "tiny": lambda: _zoo("tiny", "tiny", vocab=1024, lm_steps=200, vis_steps=300, scale=1),
    "small": lambda: _zoo("small", "small", vocab=2048, lm_steps=800, vis_steps=1000, scale=2),
}


def zoo_spec(size: str, steps: int | dict[str, int] | None = None, seed: int = 0) -> ZooSpec:
    """The spec for `size`; `steps` overrides every job's steps (int) or named ones (dict)."""
    from vlmsweep.config.errors import ConfigError

    if size not in ZOO_SIZES:
        raise ConfigError([("zoo.size", f"unknown size {size!r}; allowed: {', '.join(ZOO_SIZES)}")])
    spec = ZOO_SIZES[size]()

    def pick(job):
        n = steps.get(job.name, job.steps) if isinstance(steps, dict) else steps or job.steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError([(f"zoo.steps.{job.name}", f"must be a positive int, got {n!r}")])
        return replace(job, steps=n)  # not a rebuild from asdict: nested specs stay dataclasses

    if isinstance(steps, dict):
        known = {j.name for j in (*spec.lms, *spec.visions)}
        unknown = sorted(set(steps) - known)
        if unknown:
            raise ConfigError([("zoo.steps", f"unknown job(s) {unknown}; allowed: {sorted(known)}")])
    return ZooSpec(spec.size, spec.world_size, spec.vocab_size, tuple(map(pick, spec.lms)),
                   tuple(map(pick, spec.visions)), seed=seed)


# Fields added to a spec after artifacts were built with BUILDER_VERSION 1: at None they are
# left out of the key, so an artifact that doesn't use them keeps the key it was built under.
# (The text_* fields are None only for image-only encoders, which came after them too.)
_KEY_IF_SET = ("sliding_window", "self_distill", "text_hidden", "text_layers", "text_len")


def _key_form(part):
    if not hasattr(part, "__dataclass_fields__"):
        return part
    return {k: v for k, v in asdict(part).items() if not (k in _KEY_IF_SET and v is None)}


def content_key(*parts) -> str:
    """A short stable hash of JSON-able parts (dataclasses become dicts)."""
    norm = [_key_form(p) for p in parts]
    blob = json.dumps([BUILDER_VERSION, *norm], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def world_identity(spec: ZooSpec) -> dict:
    # The generator version too: a world whose text or images changed must rebuild the zoo.
    from vlmsweep.data.prepare import WORLD_VERSION

    return {"seed": spec.seed, "size": spec.world_size, "image_size": WORLD_IMAGE_SIZE,
            "version": WORLD_VERSION}
