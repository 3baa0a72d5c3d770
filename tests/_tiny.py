"""Helpers for tests that need a tiny VLM and real tokenized samples (not a test module)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vlmsweep.config.schema import ConnectorConfig, LLMConfig, ModelConfig, VisionConfig
from vlmsweep.data.packing import Sample
from vlmsweep.data.tokenize import tokenize_conversation
from vlmsweep.models.llm import get_llm_family, image_delimiters, load_tokenizer
from vlmsweep.models.vision import ImagePipeline, load_image_processor
from vlmsweep.models.vlm import build_vlm

IMAGE_SHAPE = (3, 32, 32)  # the tiny vision presets take 32 px images

# (conversation, number of images): with and without images, one and several turns
CONVERSATIONS = [
    ([{"role": "user", "text": "<image>\nWhat colour is the ball?"},
      {"role": "assistant", "text": "The ball is red."}], 1),
    ([{"role": "user", "text": "Say hi."}, {"role": "assistant", "text": "Hi there!"},
      {"role": "user", "text": "Again?"}, {"role": "assistant", "text": "Hello."}], 0),
    ([{"role": "user", "text": "<image> and <image>: same shape?"},
      {"role": "assistant", "text": "No, a cube and a cone."}], 2),
    ([{"role": "user", "text": "2+2?"}, {"role": "assistant", "text": "4"}], 0),
]


def model_config(vision: str = "siglip", llm: str = "llama", connector: str = "mlp2x_gelu",
                 connector_options: dict | None = None, image_delimiters: bool = False, **vision_kw) -> ModelConfig:
    """`vision` names one family, or fused ones joined by "+" ("dinov2+siglip")."""
    encoders = [VisionConfig(family=f, **vision_kw) for f in vision.split("+")]
    return ModelConfig(vision=encoders if len(encoders) > 1 else encoders[0],
                       llm=LLMConfig(family=llm, image_delimiters=image_delimiters),
                       connector=ConnectorConfig(name=connector, options=connector_options or {}))


# a Q-Former whose query count (8) differs from the tiny towers' 16 patches, so a test that
# confused the two would fail
QFORMER = {"connector": "qformer", "connector_options": {"num_queries": 8}}


def random_image(seed: int, height: int = 32, width: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


class Tiny:
    """A tiny VLM with its own tokenizer and image processor, built from on-disk presets."""

    def __init__(self, preset_root: str, cfg: ModelConfig, seed: int = 0):
        torch.manual_seed(seed)
        self.cfg = cfg
        self.vlm = build_vlm(cfg, preset_root)
        self.tokenizer = load_tokenizer(cfg.llm, preset_root)
        self.images = ImagePipeline.load(cfg.vision, preset_root)   # images → pixels, fused or not
        self.processor = None if cfg.fused else load_image_processor(cfg.vision, preset_root)
        self.image_shape = (3 * len(cfg.encoders()), *IMAGE_SHAPE[1:])
        self.template = get_llm_family(cfg.llm.family).template

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def sample(self, index: int, conversation: list[dict], num_images: int, max_length: int = 2048) -> Sample:
        tok = tokenize_conversation(self.tokenizer, self.template, conversation, num_images,
                                    self.vlm.image_tokens, max_length,
                                    delimiters=image_delimiters(self.tokenizer, self.cfg.llm))
        if num_images:
            # non-square images: the processor's pad-to-square path runs too
            images = [random_image(100 * index + k, 24 + 8 * k, 32) for k in range(num_images)]
            pixels = self.images(images)
        else:
            pixels = np.zeros((0, *self.image_shape), dtype=np.float32)
        return Sample(f"s{index}", tok.input_ids, tok.labels, pixels, position=(0, index + 1, index + 1))

    def samples(self, conversations=CONVERSATIONS) -> list[Sample]:
        return [self.sample(i, conv, n) for i, (conv, n) in enumerate(conversations)]


def token_logits(vlm, batch) -> torch.Tensor:
    """Logits at every position, computed the way VLM.forward does (embed → decoder → head)."""
    embeds = vlm.embed(batch.input_ids, batch.pixel_values)
    hidden = vlm.llm.get_decoder()(inputs_embeds=embeds, position_ids=batch.position_ids,
                                   attention_mask=batch.attention_mask, use_cache=False).last_hidden_state
    return vlm.llm.get_output_embeddings()(hidden)


def finished_stage(vision: str, llm: str, root: str, out, seed: int) -> str:
    """A one-stage variant's output as the worker writes it, every trainable weight moved."""
    from vlmsweep.config.load import dump_resolved, resolve   # the training side: imported by the tests that need it
    from vlmsweep.train.stage_output import save_stage
    from vlmsweep.train.worker import build_stage_model

    stage = {"name": "finetune", "split": "instruct", "template": "chat", "vision": {"mode": "frozen"},
             "llm": {"mode": "full"}, "connector": {"mode": "full"},
             "training": {"steps": 1, "global_batch": 1, "micro_batch": 1}}
    cfg = resolve({"name": f"{vision}-{llm}", "model": {"vision": {"family": vision}, "llm": {"family": llm},
                                                        "connector": {"name": "mlp2x_gelu"}},
                   "recipe": {"name": "one", "stages": [stage]}})
    vlm, _, _ = build_stage_model(cfg, 0, root, None)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vlm.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    save_stage(vlm, out, stage="finetune", modes={"vision": "frozen", "connector": "full", "llm": "full"},
               init_dir=None, config_yaml=dump_resolved(cfg), summary={})
    return str(out)
