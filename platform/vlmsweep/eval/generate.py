"""Load a trained variant from a stage output and answer benchmark items in batches.

Generation is greedy with a KV cache over left-padded prompts. Items are sorted by prompt
length before batching (less padding), and answers are returned by item position (some
benchmarks repeat a question id: MME's two questions per image), so the order and the batch
size never change what an item receives.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlmsweep import IMAGE_MARKER
from vlmsweep.config.errors import InputError
from vlmsweep.config.schema import VariantConfig
from vlmsweep.data.packing import left_pad
from vlmsweep.data.tokenize import prompt_ids, stop_token_id
from vlmsweep.models.check import chat_template
from vlmsweep.models.llm import image_delimiters, load_tokenizer
from vlmsweep.models.vision import ImagePipeline
from vlmsweep.models.vlm import build_vlm
from vlmsweep.train.stage_output import load_into, read_config


@dataclass
class LoadedModel:
    cfg: VariantConfig
    vlm: torch.nn.Module
    tokenizer: object
    images: ImagePipeline   # images → pixels, as training prepared them
    template: str
    stage_dir: str


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def available_device(device: str) -> str:
    """"auto" → cuda if this process sees a GPU, else cpu. "cuda" on a machine without one is
    the user's --device (eval, chat, demo): one line naming it."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError([("--device", "cuda: this machine has no CUDA GPU; use --device cpu (or auto)")])
    return device


def placement(device: str = "auto", dtype: str = "auto") -> tuple[str, torch.dtype]:
    """Where and in what precision evaluation generates. "auto": the GPU this process was
    given when it has one (Ray sets CUDA_VISIBLE_DEVICES to an eval trial's GPU, so that is
    cuda:0), in bf16 as LLaVA evaluates its models; else the CPU in fp32, where bf16 matmuls
    are slower on most CPUs and round the answers differently from training's fp32 masters."""
    device = available_device(device)
    if dtype == "auto":
        bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
        return device, torch.bfloat16 if bf16 else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be auto, {' or '.join(DTYPES)}, not {dtype!r}")
    return device, DTYPES[dtype]


def load_checkpoint(stage_dir: str | Path, preset_root: str | Path, device: str = "cpu",
                    dtype: torch.dtype = torch.float32) -> LoadedModel:
    """A finished stage output → a model ready to generate (LoRA adapters kept unmerged), built
    in `dtype` (the saved fp32 weights are cast as they load) and moved to `device`."""
    cfg = read_config(stage_dir)
    torch.manual_seed(cfg.seed)
    vlm = build_vlm(cfg.model, preset_root, dtype=dtype)
    load_into(vlm, stage_dir, merge_lora=False)
    vlm.to(device=device, dtype=dtype)  # LoRA adapters, created in fp32 by peft, too
    vlm.eval()
    return LoadedModel(cfg, vlm, load_tokenizer(cfg.model.llm, preset_root),
                       ImagePipeline.load(cfg.model.vision, preset_root), chat_template(cfg), str(stage_dir))


@dataclass
class Answers:
    texts: dict            # item index -> generated text (question ids repeat in some benchmarks: MME)
    unusable: dict         # item index -> why one of its images could not be used


def _open(root: Path, image) -> Image.Image:
    # a path relative to the benchmark folder, or the image's bytes (MMMU's parquet files)
    return Image.open(io.BytesIO(image) if isinstance(image, bytes) else root / image).convert("RGB")


def answer(model: LoadedModel, items: list, images_dir: Path, batch_size: int = 16,
           max_new_tokens: int = 32) -> Answers:
    """Greedy answers to benchmark items; items whose image is missing or unreadable are reported."""
    ready, unusable = [], {}
    for index, item in enumerate(items):
        try:
            images = [_open(images_dir, p) for p in item.images]
        except (OSError, ValueError) as err:
            unusable[index] = f"{type(err).__name__}: {err}"
            continue
        markers = IMAGE_MARKER * len(images) + ("\n" if images else "")
        conversation = [{"role": "user", "text": markers + item.prompt}]
        ids = prompt_ids(model.tokenizer, model.template, conversation, model.vlm.image_tokens,
                         image_delimiters(model.tokenizer, model.cfg.model.llm))
        pixels = model.images(images) if images else None
        ready.append((index, ids, pixels))
    ready.sort(key=lambda r: len(r[1]))  # similar lengths batch together: less padding
    stop = stop_token_id(model.tokenizer, model.template)
    pad = model.tokenizer.pad_token_id
    device = next(model.vlm.parameters()).device
    texts = {}
    for start in range(0, len(ready), batch_size):
        chunk = ready[start:start + batch_size]
        ids, mask = left_pad([c[1] for c in chunk], pad)
        pixels = [c[2] for c in chunk if c[2] is not None]
        pixel_values = torch.from_numpy(np.concatenate(pixels)).to(device) if pixels else None
        out = model.vlm.generate(ids.to(device), mask.to(device), pixel_values, max_new_tokens=max_new_tokens,
                                 stop_token_id=stop, pad_token_id=pad)
        for (index, _, _), tokens in zip(chunk, out.tolist()):
            texts[index] = _decode(model.tokenizer, tokens, stop, pad)
    return Answers(texts, unusable)


def _decode(tokenizer, tokens: list[int], stop: int, pad: int) -> str:
    if stop in tokens:
        tokens = tokens[:tokens.index(stop)]
    return tokenizer.decode([t for t in tokens if t != pad], skip_special_tokens=True).strip()
