"""The VLM: vision tower → connector → LLM, spliced at image positions.

Input ids carry IMAGE_TOKEN_ID at every position an image feature goes (the tokenizer
reserves `connector.num_output_tokens` per `<image>`), so a sample may hold any number of
images, or none. The forward pass embeds text, runs the vision tower once over all images
of the batch, and scatters connector outputs into the image positions in order.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vlmsweep.config.schema import ModelConfig

from .attention import VARLEN, attention_implementation
from .connectors import build_connector
from .llm import llm_config, load_llm
from .fused import FusedVisionTower, build_vision_tower
from .vision import VisionTower

# LLaVA's convention: a negative id can never collide with a vocabulary entry
IMAGE_TOKEN_ID = -200
IGNORE_INDEX = -100


class VLM(nn.Module):
    def __init__(self, vision: VisionTower | FusedVisionTower, connector: nn.Module, llm: nn.Module):
        super().__init__()
        self.vision, self.connector, self.llm = vision, connector, llm
        self._default_attention = llm.config._attn_implementation

    @property
    def image_tokens(self) -> int:
        return self.connector.num_output_tokens

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        image_mask = input_ids == IMAGE_TOKEN_ID
        # image positions look up a dummy id; their embeddings are replaced right below
        embeds = self.llm.get_input_embeddings()(input_ids.clamp(min=0))
        n_positions = int(image_mask.sum())
        if pixel_values is None or pixel_values.shape[0] == 0:
            if n_positions:
                raise ValueError(f"{n_positions} image positions but no pixel_values")
            if self.training and torch.is_grad_enabled():
                # Data parallel training (DeepSpeed, DDP) reduces gradients bucket by bucket; a
                # rank whose batch is text-only would skip the vision/connector buckets and the
                # ranks would desynchronise (gloo aborts). A zero-weighted blank image keeps
                # every trainable parameter in the graph with a zero gradient.
                blank = self.vision.blank(embeds.device, embeds.dtype)
                embeds = embeds + 0.0 * self.connector(self.vision(blank)).sum()
            return embeds
        features = self.connector(self.vision(pixel_values))
        if features.shape[0] * features.shape[1] != n_positions:
            raise ValueError(f"{features.shape[0]} images × {features.shape[1]} tokens "
                             f"≠ {n_positions} image positions in input_ids")
        return embeds.masked_scatter(image_mask.unsqueeze(-1), features.to(embeds.dtype))

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor, pixel_values: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token loss over positions whose target isn't IGNORE_INDEX.

        `targets` are already shifted (targets[t] is the token after position t), per sample,
        so packed samples never predict across their boundary. Packed rows pass position_ids
        that restart at 0 per sample and no attention_mask: transformers then builds the
        block-diagonal causal mask (and uses variable-length kernels where available).
        """
        embeds = self.embed(input_ids, pixel_values)
        packed = attention_mask is None and position_ids is not None
        with attention_implementation(self.llm, VARLEN if packed else self._default_attention):
            hidden = self.llm.get_decoder()(inputs_embeds=embeds, position_ids=position_ids,
                                            attention_mask=attention_mask, use_cache=False).last_hidden_state
        keep = targets != IGNORE_INDEX
        # only labelled positions reach the vocabulary projection: most positions of a
        # caption or an instruction prompt carry no label, and logits are the biggest tensor
        logits = self.llm.get_output_embeddings()(hidden[keep])
        if logits.shape[0] == 0:
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), targets[keep])

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor | None,
                 max_new_tokens: int, stop_token_id: int, pad_token_id: int) -> torch.Tensor:
        """Greedy decoding with a KV cache over left-padded prompts; returns the new tokens only."""
        embeds = self.embed(input_ids, pixel_values)
        return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, num_beams=1, eos_token_id=stop_token_id,
                                 pad_token_id=pad_token_id, use_cache=True)


def build_vlm(cfg: ModelConfig, preset_root: str | Path, dtype: torch.dtype = torch.float32,
              quantize_llm: bool = False) -> VLM:
    """Assemble a VLM from pretrained parts (the connector is freshly initialised)."""
    vision = build_vision_tower(cfg, preset_root)
    llm = load_llm(cfg.llm, preset_root, dtype=dtype, quantize_4bit=quantize_llm)
    connector = build_connector(cfg.connector.name, vision.geometry.hidden_size,
                                llm_config(cfg.llm, preset_root).hidden_size,
                                vision.geometry.num_tokens, dict(cfg.connector.options))
    return VLM(vision.to(dtype), connector.to(dtype), llm)
