"""Export a stage output as a Hugging Face Llava folder (`LlavaForConditionalGeneration`).

The folder is what plain transformers loads: `AutoModelForImageTextToText.from_pretrained`
and `AutoProcessor.from_pretrained` (the image processor, the tokenizer with an `<image>`
token, and the chat template the exported stage was trained with, as Jinja).

How vlmsweep's model maps onto Llava's:
  vision tower  the same transformers class, cut to the layers that run (vlmsweep drops the
                layers above its feature layer), so `vision_feature_layer` is -1: the
                feature layer training used. `vision_feature_select_strategy`: "default"
                drops the CLS token (feature_select "patch" on CLIP/DINOv2), "full" keeps
                every token (SigLIP has none; "cls_patch" keeps it)
  connector     LlavaMultiModalProjector is Linear → act → Linear. mlp2x_gelu is exactly
                that (act gelu); linear / mlp1x_gelu and identity become Linear → identity
                act ("linear") → an identity Linear (exact: the identity matmul adds zeros)
  LLM           the decoder and its head as they are. The `<image>` token is added to the
                tokenizer; when its id is past the vocabulary, the embedding gets a row (the
                mean row; image positions never read it) and the head a zero row, which
                generation never picks (generation_config.suppress_tokens)
  LoRA          merged into the weights (load_into(merge_lora=True))
Images: LlavaImageProcessor with the tower processor's resize/crop/normalisation, and
`do_pad` for vlmsweep's pad-to-square `image_aspect` (same centring, same mean-colour fill).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from vlmsweep import IMAGE_MARKER
from vlmsweep.config.errors import InputError
from vlmsweep.data.tokenize import special_tokens, stop_token_id
from vlmsweep.models.check import chat_template
from vlmsweep.models.connectors import CONNECTORS
from vlmsweep.models.llm import load_tokenizer
from vlmsweep.models.vision import get_vision_family, load_image_processor
from vlmsweep.models.vlm import build_vlm
from vlmsweep.train.stage_output import load_into, read_config, read_manifest

from .chat_template import jinja_template

# connector -> Llava's projector_hidden_act; the middle Linear is an identity for "linear"
EXPRESSIBLE = {"mlp2x_gelu": "gelu", "linear": "linear", "mlp1x_gelu": "linear", "identity": "linear"}
WHY_NOT = {
    "ln_mlp": "its LayerNorm between the Linears has no place in Llava's Linear-act-Linear projector",
    "resampler": "its learned queries cross-attend to the vision tokens; Llava's projector maps each token alone",
    "qformer": "its learned queries pass through BLIP-2 Q-Former layers that cross-attend to the vision tokens; "
               "Llava's projector maps each token alone",
    "pixel_shuffle": "it merges neighbouring vision tokens (space-to-depth); Llava's projector maps each token alone",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def refusal(connector: str) -> str | None:
    """Why a connector can't be exported, or None when Llava expresses it exactly."""
    if connector in EXPRESSIBLE:
        return None
    if connector.startswith("mlp") and connector in CONNECTORS:
        why = "it has more than two Linear layers; Llava's projector is exactly Linear-GELU-Linear"
    else:
        why = WHY_NOT.get(connector, "Llava's projector (Linear-act-Linear) does not express it")
    return (f"connector {connector!r} can't be exported as hf-llava: {why} "
            f"(exportable: {', '.join(sorted(EXPRESSIBLE))})")


def _refuse(problem: str) -> None:
    raise InputError([("--format hf-llava", problem)])


def trained_template(cfg, stage: str) -> str:
    """The template the exported stage trained with: "plain" for a caption stage, else the chat one."""
    stages = {s.name: s for s in cfg.recipe.stages}
    return "plain" if stage in stages and stages[stage].template == "plain" else chat_template(cfg)


def feature_strategy(cfg) -> str:
    prefix = get_vision_family(cfg.model.vision.family).prefix_tokens
    if cfg.model.vision.feature_select == "cls_patch" or prefix == 0:
        return "full"
    if prefix != 1:
        _refuse(f"vision family {cfg.model.vision.family!r} has {prefix} prefix tokens; Llava's 'default' "
                "strategy drops exactly one")
    return "default"


def check_exportable(cfg) -> None:
    """Everything a config alone tells (before any weights load)."""
    if cfg.model.fused:
        _refuse("its vision encoders are fused (features concatenated per patch); Llava holds one vision tower")
    problem = refusal(cfg.model.connector.name)
    if problem:
        _refuse(problem)
    if cfg.model.llm.image_delimiters:
        _refuse("model.llm.image_delimiters puts <im_start>/<im_end> around each image; Llava's processor "
                "expands <image> alone, so the exported model would see images without them")
    feature_strategy(cfg)


def _image_token(tokenizer) -> int:
    from tokenizers import AddedToken

    if IMAGE_MARKER not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(IMAGE_MARKER, special=True, normalized=False)], special_tokens=True)
    return int(tokenizer.convert_tokens_to_ids(IMAGE_MARKER))


def _projector(vlm, act: str) -> dict:
    layers = [m for m in vlm.connector.modules() if isinstance(m, torch.nn.Linear)]
    if act == "gelu":
        first, second = layers
    else:  # one Linear (or none: identity), then an exact identity
        dim = vlm.llm.config.hidden_size
        eye = torch.nn.Linear(dim, dim)
        with torch.no_grad():
            eye.weight.copy_(torch.eye(dim))
            eye.bias.zero_()
        first, second = (layers[0] if layers else eye), eye
    return {f"linear_{i}.{k}": v for i, layer in ((1, first), (2, second)) for k, v in layer.state_dict().items()}


def _grow(weight: torch.Tensor, rows: int, fill: torch.Tensor) -> torch.Tensor:
    if weight.shape[0] >= rows:
        return weight
    extra = fill.expand(rows - weight.shape[0], -1)
    return torch.cat([weight, extra.to(weight.dtype)])


def llava_state(vlm, config, act: str) -> dict[str, torch.Tensor]:
    """vlmsweep's weights under Llava's names (checked against Llava's own key set)."""
    from transformers import LlavaForConditionalGeneration

    head = vlm.llm.get_output_embeddings()
    if head.bias is not None:
        _refuse(f"the LLM ({vlm.llm.config.model_type}) has a bias on its output head; Llava's lm_head has none")
    vocab = config.text_config.vocab_size
    state = {f"model.vision_tower.{k}": v for k, v in vlm.vision.model.state_dict().items()}
    state.update({f"model.multi_modal_projector.{k}": v for k, v in _projector(vlm, act).items()})
    decoder = dict(vlm.llm.get_decoder().state_dict())
    embed_ptr = vlm.llm.get_input_embeddings().weight.data_ptr()
    embed_key = next(k for k, v in decoder.items() if v.data_ptr() == embed_ptr)
    embed = decoder[embed_key]
    decoder[embed_key] = _grow(embed, vocab, embed.mean(0, keepdim=True))
    state.update({f"model.language_model.{k}": v for k, v in decoder.items()})
    state["lm_head.weight"] = _grow(head.weight, vocab, torch.zeros(1, head.weight.shape[1]))
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(config)
    if type(llava.model.language_model) is not type(vlm.llm.get_decoder()):
        _refuse(f"Llava builds a {type(llava.model.language_model).__name__} from this LLM's config, "
                f"not its {type(vlm.llm.get_decoder()).__name__}")
    want = set(llava.state_dict())
    if want != set(state):
        raise RuntimeError(f"hf-llava export: keys differ from Llava's: missing {sorted(want - set(state))[:5]}, "
                           f"unexpected {sorted(set(state) - want)[:5]}")
    return state


def llava_config(vlm, cfg, image_id: int, act: str, dtype: torch.dtype):
    from transformers import LlavaConfig

    vision = vlm.vision.model.config.to_dict()
    vision["num_hidden_layers"] = vlm.vision.geometry.depth   # the layers vlmsweep keeps
    for key in ("out_features", "out_indices", "stage_names"):   # DINOv2's backbone view: follows the depth
        vision.pop(key, None)
    text = vlm.llm.config.to_dict()
    text["vocab_size"] = max(text["vocab_size"], image_id + 1)
    text.pop("quantization_config", None)
    for sub in (vision, text):
        sub.pop("_name_or_path", None)   # this machine's preset or cache path
        sub["dtype"] = str(dtype).removeprefix("torch.")
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                       image_seq_length=vlm.image_tokens, projector_hidden_act=act, vision_feature_layer=-1,
                       vision_feature_select_strategy=feature_strategy(cfg), multimodal_projector_bias=True,
                       tie_word_embeddings=bool(text.get("tie_word_embeddings", False)), dtype=dtype)


def image_processor(cfg, preset_root):
    """LlavaImageProcessor doing what the tower's processor did, with do_pad for image_aspect 'pad'."""
    from transformers.models.llava import LlavaImageProcessorPil

    tower = load_image_processor(cfg.model.vision, preset_root)
    keys = ("do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean",
            "image_std", "do_convert_rgb")
    kwargs = {k: getattr(tower, k) for k in keys if getattr(tower, k, None) is not None}
    crop = getattr(tower, "do_center_crop", None) and getattr(tower, "crop_size", None)
    kwargs.update(do_center_crop=bool(crop), crop_size=dict(crop) if crop else dict(tower.size),
                  do_pad=cfg.model.vision.image_aspect == "pad")
    kwargs["size"] = dict(kwargs["size"])
    return LlavaImageProcessorPil(**kwargs)


def export_hf_llava(stage_dir: str, out: str | Path, preset_root: str, dtype: str = "float32") -> dict:
    """Write the folder; returns what was exported (for the CLI to print)."""
    from transformers import GenerationConfig, LlavaProcessor

    cfg = read_config(stage_dir)
    check_exportable(cfg)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError([("OUT", f"{out} already exists and is not an empty directory")])
    template = trained_template(cfg, read_manifest(stage_dir)["stage"])
    act = EXPRESSIBLE[cfg.model.connector.name]

    torch.manual_seed(cfg.seed)
    vlm = build_vlm(cfg.model, preset_root)
    load_into(vlm, stage_dir, merge_lora=True)
    tokenizer = load_tokenizer(cfg.model.llm, preset_root)
    stop = stop_token_id(tokenizer, template)   # before <image> joins the vocabulary
    image_id = _image_token(tokenizer)
    config = llava_config(vlm, cfg, image_id, act, DTYPES[dtype])
    state = {k: v.detach().to("cpu", DTYPES[dtype]).contiguous() for k, v in llava_state(vlm, config, act).items()}
    generation = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=stop,
                                  pad_token_id=tokenizer.pad_token_id, suppress_tokens=[image_id], do_sample=False)
    processor = LlavaProcessor(image_processor=image_processor(cfg, preset_root), tokenizer=tokenizer,
                               patch_size=vlm.vision.model.config.patch_size,
                               vision_feature_select_strategy=config.vision_feature_select_strategy,
                               num_additional_image_tokens=get_vision_family(cfg.model.vision.family).prefix_tokens,
                               chat_template=jinja_template(template, special_tokens(tokenizer)))
    _write(out, config, state, generation, processor)
    return {"out": str(out), "stage_dir": str(stage_dir), "connector": cfg.model.connector.name,
            "vision": cfg.model.vision.family, "llm": cfg.model.llm.family, "template": template,
            "image_token_id": image_id, "image_tokens": vlm.image_tokens, "dtype": dtype,
            "feature_select_strategy": config.vision_feature_select_strategy}


def _write(out: Path, config, state, generation, processor) -> None:
    """Assembled in a sibling folder, then renamed into place: never a half-written export."""
    from huggingface_hub import save_torch_state_dict

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        config.architectures = ["LlavaForConditionalGeneration"]
        config.save_pretrained(tmp)
        generation.save_pretrained(tmp)
        save_torch_state_dict(state, tmp, max_shard_size="5GB")
        processor.save_pretrained(tmp)
        mask = os.umask(0)
        os.umask(mask)
        for path in [tmp, *tmp.iterdir()]:   # mkdtemp made it private; an export is for sharing
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
        if out.exists():
            out.rmdir()   # empty (checked above)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
