"""The zoo's pretraining loops: each runs inside one Ray Train worker (TorchTrainer).

A job is a plain dict (absolute paths: Ray workers run in their own cwd). The loop writes
the pretrained model into job["out_dir"] with save_pretrained and returns a summary, which
the driver receives as the TorchTrainer result's `return_value`.

Why plain torch AdamW and no DeepSpeed here: a zoo job is one worker training a model of
well under a million parameters; ZeRO sharding and engine setup would only add start-up
time. Grid stages, which do need it, go through train/ instead.
"""

from __future__ import annotations

import io
import math
import random
import time
from pathlib import Path

import torch

from vlmsweep.data.shards import iter_samples


def _optimizer(model, lr: float, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    # linear warmup then cosine decay: a short schedule still converges smoothly
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    return opt, sched


def _step(model, opt, sched, loss) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return float(loss.detach())


def _rank0() -> bool:
    try:
        import ray.train

        return ray.train.get_context().get_world_rank() == 0
    except Exception:  # called outside Ray (a debugging run): act as rank 0
        return True


def _setup(job: dict) -> None:
    # one thread per job: the worker holds one Ray CPU, and on a shared machine extra
    # intra-op threads fight other processes and run several times slower, not faster
    torch.set_num_threads(job.get("threads", 1))
    torch.manual_seed(job["seed"])


def _summary(model, losses: list[float], started: float, **extra) -> dict:
    tail = max(1, len(losses) // 10)
    # the last tenth's mean: one tiny batch's loss is noisy, the trend is what matters
    return {"class": type(model).__name__, "params": int(sum(p.numel() for p in model.parameters())),
            "steps": len(losses), "first_loss": losses[0], "final_loss": sum(losses[-tail:]) / tail,
            "losses": losses, "seconds": round(time.time() - started, 2), **extra}


def lm_pretrain(job: dict) -> dict:
    """Causal-LM pretraining on the world's text, packed into fixed-length blocks."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from vlmsweep.models.llm import get_llm_family

    from .text import world_texts

    started = time.time()
    spec, out = job["spec"], Path(job["out_dir"])
    _setup(job)
    rng = random.Random(job["seed"])
    tok = PreTrainedTokenizerFast.from_pretrained(out)  # the driver saved the family tokenizer there
    texts = list(world_texts(job["world_dir"]))
    rng.shuffle(texts)
    prefix = [tok.bos_token_id] if tok.bos_token_id is not None else []
    stream = []
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        stream += prefix + ids + [tok.eos_token_id]
    n = spec["seq_len"]
    blocks = torch.tensor(stream[: len(stream) // n * n]).view(-1, n)

    family = get_llm_family(spec["family"])
    window = {"sliding_window": spec["sliding_window"]} if spec.get("sliding_window") else {}
    config = family.config_class(
        vocab_size=len(tok), hidden_size=spec["hidden"], num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"], num_key_value_heads=spec["kv_heads"],
        intermediate_size=spec["intermediate"], max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False, **{**family.tiny_overrides, **window})
    model = AutoModelForCausalLM.from_config(config)
    model.train()
    opt, sched = _optimizer(model, spec["lr"], spec["steps"])
    losses = []
    for _ in range(spec["steps"]):
        batch = blocks[torch.randint(len(blocks), (spec["batch"],))]
        losses.append(_step(model, opt, sched, model(input_ids=batch, labels=batch).loss))
    if _rank0():
        model.save_pretrained(out)
    return _summary(model, losses, started, tokens=len(stream), blocks=len(blocks))


def _vision_model(spec: dict, tok):
    """The full dual encoder (CLIPModel / SiglipModel): its text tower exists only for the loss."""
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    text = dict(vocab_size=len(tok), hidden_size=spec["text_hidden"], intermediate_size=2 * spec["text_hidden"],
                num_hidden_layers=spec["text_layers"], num_attention_heads=4, max_position_embeddings=spec["text_len"],
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    vision = dict(hidden_size=spec["hidden"], intermediate_size=2 * spec["hidden"], num_hidden_layers=spec["layers"],
                  num_attention_heads=spec["heads"], image_size=spec["image_size"], patch_size=spec["patch_size"])
    if spec["family"] == "clip":
        return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=spec["hidden"]))
    # SigLIP compares pooled image features with projected text features: same width
    return SiglipModel(SiglipConfig(text_config={**text, "projection_size": spec["hidden"]}, vision_config=vision))


def vision_pretrain(job: dict) -> dict:
    """Contrastive (CLIP) or sigmoid (SigLIP) image-caption pretraining on captions_short."""
    from PIL import Image
    from transformers import PreTrainedTokenizerFast

    from vlmsweep.models.vision import get_vision_family, preprocess_images

    started = time.time()
    spec = job["spec"]
    _setup(job)
    family = get_vision_family(spec["family"])
    tok = PreTrainedTokenizerFast.from_pretrained(job["tokenizer_dir"])
    processor = family.tiny_processor(spec["image_size"])
    samples = list(iter_samples(Path(job["world_dir"]) / "captions_short"))
    pixels = torch.from_numpy(preprocess_images(
        processor, [Image.open(io.BytesIO(s["images"][0])) for s in samples], "pad"))
    captions = [s["conversations"][-1]["text"] for s in samples]
    # caption + eos (CLIP pools at the first eos), right-padded to a fixed length (SigLIP
    # pools the last position, as the original does with its fixed 64-token texts)
    L = spec["text_len"]
    ids = torch.full((len(captions), L), tok.pad_token_id)
    for i, row in enumerate(tok(captions, add_special_tokens=False)["input_ids"]):
        row = row[: L - 1] + [tok.eos_token_id]
        ids[i, : len(row)] = torch.tensor(row)
    mask = (ids != tok.pad_token_id).long()

    model = _vision_model(spec, tok)
    model.train()
    opt, sched = _optimizer(model, spec["lr"], spec["steps"])
    losses = []
    for _ in range(spec["steps"]):
        pick = torch.randperm(len(samples))[: spec["batch"]]
        extra = {"attention_mask": mask[pick]} if spec["family"] == "clip" else {}
        loss = model(input_ids=ids[pick], pixel_values=pixels[pick], return_loss=True, **extra).loss
        losses.append(_step(model, opt, sched, loss))
    vision = model.vision_model
    if not isinstance(vision, family.model_class):  # transformers 5 keeps the tower as its own model class
        raise TypeError(f"{type(model).__name__}.vision_model is {type(vision).__name__}, not {family.model_class.__name__}")
    return _finish_vision(vision, processor, pixels, job, losses, started, pairs=len(samples))


def _finish_vision(vision, processor, pixels: torch.Tensor, job: dict, losses: list[float], started: float,
                   **extra) -> dict:
    """Centre the features VLMs read, save the tower and its processor, summarise."""
    spec, family = job["spec"], _family(job["spec"])
    offset = center_features(vision, pixels, spec["center_layer"], family.prefix_tokens) \
        if spec["center_layer"] is not None else None
    if _rank0():
        vision.save_pretrained(job["out_dir"])
        processor.save_pretrained(job["out_dir"])
    grid = spec["image_size"] // spec["patch_size"]
    return _summary(vision, losses, started, num_patches=grid * grid, **extra,
                    centred_layer=spec["center_layer"], removed_offset_norm=offset)


def _family(spec: dict):
    from vlmsweep.models.vision import get_vision_family

    return get_vision_family(spec["family"])


def center_features(vision, pixels: torch.Tensor, layer: int, prefix_tokens: int = 0) -> float:
    """Make the patch features VLMs read (hidden_states[layer]) zero-mean over the world's images.

    Measured on the small zoo: those features were mostly one constant vector shared by every
    image (|mean| 3.7 vs 0.8 spread across images), so the connector's outputs all looked
    alike after the LLM's norm, and a VLM trained on them learned as well with shuffled images
    as with the right ones. Folding the mean into the bias of the MLP output projection of
    the layer that writes hidden_states[layer] removes it exactly (that bias adds straight
    into the residual stream, times the layer's output gain) and leaves a standard checkpoint.
    The mean is over patch tokens (not CLIP's or DINOv2's CLS, which VLMs drop). Returns the
    removed mean's norm.
    """
    from vlmsweep.models.stack import block_stack

    def patch_mean():
        total, count = 0.0, 0
        for chunk in pixels.split(256):
            states = vision(pixel_values=chunk, output_hidden_states=True).hidden_states
            patches = states[layer][:, prefix_tokens:]
            total = total + patches.sum(dim=(0, 1))
            count += patches.shape[0] * patches.shape[1]
        return total / count, len(states)

    vision.eval()
    with torch.no_grad():
        mean, n_states = patch_mean()
        index = layer % n_states  # hidden_states[0] is the embeddings, [i] layer i-1's output
        if index == 0:
            raise ValueError("center_layer must name an encoder layer's output, not the embeddings")
        _, layers = block_stack(vision)
        bias, gain = _residual_bias(layers[index - 1])
        bias -= mean / gain
        # the shift assumes the layer ends in `residual + gain * (W h + bias)`: check that it did
        left, _ = patch_mean()
        if left.norm() > 1e-3 * mean.norm() + 1e-5:
            raise RuntimeError(f"centring {type(layers[index - 1]).__name__} left a mean of norm "
                               f"{float(left.norm()):.3g} (was {float(mean.norm()):.3g})")
    return float(mean.norm())


def _residual_bias(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """The bias of the layer's MLP output projection and the per-channel gain applied to it
    before it joins the residual stream.

    CLIP and SigLIP add fc2's output as is (gain 1). DINOv2 multiplies it by LayerScale's
    lambda first (Dinov2Layer: `residual + layer_scale2(mlp(norm2(x)))`), so a shift of the
    features by -m needs a bias shift of -m / lambda. The projection is the MLP's last
    Linear: fc2, or down_proj in DINOv2's SwiGLU variant.
    """
    projections = [m for m in layer.mlp.modules() if isinstance(m, torch.nn.Linear)]
    if not projections or projections[-1].bias is None:
        raise ValueError(f"{type(layer).__name__}'s MLP has no output bias to fold a mean into")
    bias = projections[-1].bias
    scale = getattr(layer, "layer_scale2", None)
    gain = scale.lambda1.detach() if scale is not None else torch.ones_like(bias)
    if gain.abs().min() < 1e-4:  # dividing by ~0 would blow the bias up instead of centring
        raise ValueError(f"{type(layer).__name__}'s layer scale has a near-zero channel ({float(gain.abs().min()):.2g})")
    return bias, gain
