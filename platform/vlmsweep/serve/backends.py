"""Models to talk to: a vlmsweep stage output, or an hf-llava export, behind one `reply` call.

A conversation is a list of Turn: user turns carry their text and their images (any number,
or none), assistant turns the text the model answered. Both backends rebuild the whole
prompt each turn, as training rendered it:

  VLMChat    a stage output (or SWEEP/VARIANT's last training stage). The prompt is built by
             the data code evaluation uses (`prompt_ids` with the variant's chat template, one
             `<image>` per image, "<image><image>\\nText" as the world's data writes a turn),
             images go through the tower's processor with the variant's `image_aspect`, and
             greedy decoding is `VLM.generate`, evaluation's own call.
  LlavaChat  a folder written by `vlmsweep export --format hf-llava`, loaded by plain transformers:
             AutoModelForImageTextToText + AutoProcessor, prompt by `processor.apply_chat_template`
             (the training template, exported as Jinja; test_export checks it tokenizes as above).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from vlmsweep import IMAGE_MARKER


from .turns import ChatError, Sampling, Turn, load_image  # noqa: F401  (the backends' vocabulary)


class VLMChat:
    """A stage output served as evaluation serves it (eval/generate.py)."""

    def __init__(self, stage_dir: str, preset_root: str, lora: str = "unmerged", quantize: str | None = None,
                 device: str = "cpu"):
        from vlmsweep.data.tokenize import stop_token_id
        from vlmsweep.eval.generate import load_checkpoint
        from vlmsweep.train.stage_output import read_manifest

        self.stage_dir, self.device = str(stage_dir), device
        if lora == "unmerged":
            model = load_checkpoint(stage_dir, preset_root)        # evaluation's loader: adapters unmerged
        else:
            model = _load_merged(stage_dir, preset_root)
        self.model, self.cfg, self.vlm = model, model.cfg, model.vlm
        if quantize:
            from .quantize import quantize_llm

            self.vlm.llm = quantize_llm(self.vlm.llm, quantize, device)
            self.vlm.vision.to(device)
            self.vlm.connector.to(device)
        elif device != "cpu":
            self.vlm.to(device)
        self.stop = stop_token_id(model.tokenizer, model.template)
        self.context = int(getattr(self.vlm.llm.config, "max_position_embeddings", 0) or 0)
        manifest = read_manifest(stage_dir)
        adapters = sorted(c for c, e in manifest["components"].items() if e.get("lora"))
        m = self.cfg.model
        self.description = (f"stage {manifest['stage']} of {self.cfg.name}: "
                            f"{' ⊕ '.join(f'{v.family} ({v.checkpoint})' for _, v in m.encoders())} + {m.connector.name} + "
                            f"{m.llm.family} ({m.llm.checkpoint}), template {model.template}, "
                            f"{self.vlm.image_tokens} tokens per image"
                            + (f", LoRA on {'+'.join(adapters)} {lora}" if adapters else "")
                            + (f", LLM {quantize}" if quantize else "") + f", on {device}")

    def prompt(self, turns: list[Turn]):
        """(input ids [1, n], pixel values or None) for the conversation, as evaluation builds them."""
        from vlmsweep.data.tokenize import prompt_ids
        from vlmsweep.models.llm import image_delimiters

        conversation, images = [], []
        for turn in turns:
            if turn.role == "user":
                markers = IMAGE_MARKER * len(turn.images) + ("\n" if turn.images else "")
                conversation.append({"role": "user", "text": markers + turn.text})
                images += turn.images
            else:
                conversation.append({"role": "assistant", "text": turn.text})
        ids = prompt_ids(self.model.tokenizer, self.model.template, conversation, self.vlm.image_tokens,
                         image_delimiters(self.model.tokenizer, self.cfg.model.llm))
        pixels = torch.from_numpy(self.model.images(images)) if images else None
        return torch.from_numpy(np.asarray(ids))[None], pixels

    @torch.no_grad()
    def reply(self, turns: list[Turn], sampling: Sampling) -> str:
        from vlmsweep.eval.generate import _decode   # evaluation's decoding: cut at the stop token

        ids, pixels = self.prompt(turns)
        _check_context(ids.shape[1], sampling.max_new_tokens, self.context)
        ids = ids.to(self.device)
        pixels = pixels.to(self.device) if pixels is not None else None
        mask = torch.ones_like(ids)
        pad = self.model.tokenizer.pad_token_id
        if sampling.greedy:
            out = self.vlm.generate(ids, mask, pixels, max_new_tokens=sampling.max_new_tokens,
                                    stop_token_id=self.stop, pad_token_id=pad)
        else:   # VLM.generate is greedy only: the same call, with sampling
            out = self.vlm.llm.generate(inputs_embeds=self.vlm.embed(ids, pixels), attention_mask=mask,
                                        max_new_tokens=sampling.max_new_tokens, eos_token_id=self.stop,
                                        pad_token_id=pad, use_cache=True, **sampling.kwargs())
        return _decode(self.model.tokenizer, out[0].tolist(), self.stop, pad)


def _load_merged(stage_dir: str, preset_root: str):
    """eval.generate.load_checkpoint with LoRA adapters merged into the weights."""
    from vlmsweep.eval.generate import LoadedModel
    from vlmsweep.models.check import chat_template
    from vlmsweep.models.llm import load_tokenizer
    from vlmsweep.models.vision import ImagePipeline
    from vlmsweep.models.vlm import build_vlm
    from vlmsweep.train.stage_output import load_into, read_config

    cfg = read_config(stage_dir)
    torch.manual_seed(cfg.seed)
    vlm = build_vlm(cfg.model, preset_root)
    load_into(vlm, stage_dir, merge_lora=True)
    vlm.eval()
    return LoadedModel(cfg, vlm, load_tokenizer(cfg.model.llm, preset_root),
                       ImagePipeline.load(cfg.model.vision, preset_root), chat_template(cfg), str(stage_dir))


def _check_context(prompt: int, new: int, context: int) -> None:
    if context and prompt + new > context:
        raise ChatError(f"the conversation is {prompt} tokens; with --max-new-tokens {new} that is over the "
                        f"model's context of {context}: /reset to start over")


def is_llava_export(path: str) -> bool:
    """A folder `vlmsweep export --format hf-llava` wrote (a Llava config.json, no stage manifest)."""
    config = Path(path) / "config.json"
    if not config.is_file() or (Path(path) / "manifest.json").exists():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "llava"
    except (OSError, ValueError):
        return False


class LlavaChat:
    """An hf-llava export, through plain transformers only."""

    def __init__(self, path: str, quantize: str | None = None, device: str = "cpu"):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from .quantize import llava_quantized_kwargs

        self.path, self.device = str(path), device
        self.model = AutoModelForImageTextToText.from_pretrained(path, **llava_quantized_kwargs(quantize, device))
        self.model.eval()
        if not quantize and device != "cpu":
            self.model.to(device)
        self.processor = AutoProcessor.from_pretrained(path)
        text = self.model.config.text_config
        self.context = int(getattr(text, "max_position_embeddings", 0) or 0)
        self.description = (f"hf-llava export {path}: {self.model.config.vision_config.model_type} + "
                            f"{text.model_type}, {self.model.config.image_seq_length} tokens per image"
                            + (f", LLM {quantize}" if quantize else "") + f", on {device}")

    def messages(self, turns: list[Turn]) -> list[dict]:
        out = []
        for turn in turns:
            parts = [{"type": "image", "image": image} for image in turn.images]
            out.append({"role": turn.role, "content": [*parts, {"type": "text", "text": turn.text}]})
        return out

    @torch.no_grad()
    def reply(self, turns: list[Turn], sampling: Sampling) -> str:
        inputs = self.processor.apply_chat_template(self.messages(turns), add_generation_prompt=True, tokenize=True,
                                                    return_dict=True, return_tensors="pt")
        n = inputs["input_ids"].shape[1]
        _check_context(n, sampling.max_new_tokens, self.context)
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model.generate(**inputs, max_new_tokens=sampling.max_new_tokens, **sampling.kwargs())
        return self.processor.decode(out[0, n:], skip_special_tokens=True).strip()


def load_chat_model(checkpoint: str, work_dir: str | None = None, lora: str | None = None,
                    quantize: str | None = None, device: str = "auto"):
    """VLMChat or LlavaChat for CHECKPOINT: a stage dir, SWEEP/VARIANT, or an hf-llava export.

    Without a work dir (--work-dir, $VLMSWEEP_WORK_DIR) a stage dir at WORK/stages/NAME reads
    its presets and zoo from WORK, so `zoo:` checkpoints are found wherever the stage was trained.
    """
    import os

    from vlmsweep.config.errors import InputError
    from vlmsweep.config.workdir import WorkDir
    from vlmsweep.eval.generate import available_device
    from vlmsweep.export.resolve import resolve_checkpoint

    from .quantize import check_quantize

    check_quantize(quantize, device)
    device = available_device(device)
    if is_llava_export(checkpoint):
        if lora == "unmerged":
            raise InputError([("--lora", ("an hf-llava export has its LoRA adapters merged already: "
                                          "leave out --lora, or use --lora merged"))])
        return LlavaChat(checkpoint, quantize=quantize, device=device)
    if work_dir is None and not os.environ.get("VLMSWEEP_WORK_DIR"):
        here = Path(checkpoint).expanduser()
        if here.parent.name == "stages" and (here / "manifest.json").is_file():
            work_dir = str(here.parent.parent)
    work = WorkDir.at(work_dir)
    stage_dir = resolve_checkpoint(checkpoint, work)
    return VLMChat(stage_dir, work.model_root(), lora=lora or "unmerged", quantize=quantize, device=device)
