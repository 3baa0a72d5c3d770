"""Language models: any causal LM transformers can load, grouped by family.

A family entry names the transformers model types it accepts, its default chat template,
its special tokens and a tiny preset config. Presets are written with save_pretrained
(model + tokenizer) and then loaded by path, exactly like a Hub name or a local directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, GemmaConfig, LlamaConfig,
                          MistralConfig, PhiConfig, PreTrainedTokenizerFast, Qwen2Config, StableLmConfig)

from vlmsweep.config.errors import ConfigError, lookup
from vlmsweep.config.schema import LLMConfig

from .presets import materialize, preset_dir, save_model, seeded_init, zoo_checkpoint


@dataclass(frozen=True)
class LLMFamily:
    model_types: tuple[str, ...]
    template: str
    config_class: type
    # tokens of the family's own tokenizer, reused by the tiny preset's tokenizer
    bos: str | None
    eos: str
    extra_special: tuple[str, ...] = ()
    tiny_overrides: dict = field(default_factory=dict)


_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=4096)

LLM_FAMILIES: dict[str, LLMFamily] = {
    "llama": LLMFamily(("llama",), "vicuna", LlamaConfig, "<s>", "</s>"),
    "stablelm": LLMFamily(("stablelm",), "vicuna", StableLmConfig, None, "<|endoftext|>",
                          tiny_overrides={"partial_rotary_factor": 0.25}),
    "phi": LLMFamily(("phi",), "vicuna", PhiConfig, None, "<|endoftext|>",
                     tiny_overrides={"partial_rotary_factor": 0.5}),
    "gemma": LLMFamily(("gemma",), "gemma", GemmaConfig, "<bos>", "<eos>", ("<start_of_turn>", "<end_of_turn>"),
                       tiny_overrides={"head_dim": 16}),
    "qwen2": LLMFamily(("qwen2",), "chatml", Qwen2Config, None, "<|endoftext|>", ("<|im_start|>", "<|im_end|>")),
    "mistral": LLMFamily(("mistral",), "mistral", MistralConfig, "<s>", "</s>", ("[INST]", "[/INST]")),
}


def get_llm_family(name: str) -> LLMFamily:
    return lookup(LLM_FAMILIES, "llm family", name, field="model.llm.family")


def byte_tokenizer(family: LLMFamily) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte symbols + the family's special tokens).

    Why not a trained BPE: tiny presets must exist offline with no training data; bytes
    cover any text, and offsets still map tokens to characters for label spans.
    The zoo trains a real BPE tokenizer on the synthetic world instead.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = [t for t in ("<unk>", "<pad>", family.bos, family.eos, *family.extra_special) if t]
    vocab = {tok: i for i, tok in enumerate(specials + alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                   bos_token=family.bos, eos_token=family.eos,
                                   additional_special_tokens=list(family.extra_special))


def _save_preset(family_name: str, out: Path) -> None:
    family = get_llm_family(family_name)
    tokenizer = byte_tokenizer(family)
    overrides = {**_TINY, **family.tiny_overrides}
    config = family.config_class(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 tie_word_embeddings=False, **overrides)
    save_model(seeded_init(lambda: AutoModelForCausalLM.from_config(config)), out)
    tokenizer.save_pretrained(out)


def resolve_checkpoint(cfg: LLMConfig, preset_root: str | Path) -> str:
    if cfg.checkpoint == "tiny":
        return str(materialize(preset_dir(preset_root, "llm", cfg.family), lambda d: _save_preset(cfg.family, d)))
    return zoo_checkpoint(cfg.checkpoint, preset_root, "model.llm.checkpoint") or cfg.checkpoint


def llm_config(cfg: LLMConfig, preset_root: str | Path):
    """The LLM's transformers config (no weights), checked against the family."""
    family = get_llm_family(cfg.family)
    config = AutoConfig.from_pretrained(resolve_checkpoint(cfg, preset_root), trust_remote_code=cfg.trust_remote_code)
    if config.model_type not in family.model_types:
        raise ConfigError([("model.llm.checkpoint", f"{cfg.checkpoint!r} is a {config.model_type!r} model, "
                                                    f"not model.llm.family {cfg.family!r}")])
    return config


# DeepSpeed-VisualChat's image tokens: `<image>` is the placeholder the features replace
# (IMAGE_MARKER), and with `model.llm.image_delimiters` each image's positions sit between these
# two, added to the vocabulary as special tokens. Their embeddings start at the mean of the
# others (transformers' mean resizing) and train with the LLM's input embeddings.
IMAGE_START, IMAGE_END = "<im_start>", "<im_end>"


def image_delimiters(tokenizer, cfg: LLMConfig) -> tuple[int, int] | None:
    """The ids that open and close each image, or None without `image_delimiters`."""
    if not cfg.image_delimiters:
        return None
    start, end = tokenizer.convert_tokens_to_ids([IMAGE_START, IMAGE_END])
    return int(start), int(end)


def load_tokenizer(cfg: LLMConfig, preset_root: str | Path):
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(cfg, preset_root),
                                              trust_remote_code=cfg.trust_remote_code)
    if not tokenizer.is_fast:
        raise ConfigError([("model.llm.checkpoint", "needs a fast tokenizer (labels come from token offsets)")])
    if tokenizer.pad_token is None:
        # padding positions never carry labels or attention, so any id is safe; unk/eos are always there
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if cfg.image_delimiters:
        tokenizer.add_tokens([IMAGE_START, IMAGE_END], special_tokens=True)
    return tokenizer


def load_llm(cfg: LLMConfig, preset_root: str | Path, dtype: torch.dtype = torch.float32, quantize_4bit: bool = False):
    """The causal LM; `quantize_4bit` loads NF4 weights through bitsandbytes (QLoRA, GPU only)."""
    llm_config(cfg, preset_root)  # family check before loading weights
    extra = {}
    if quantize_4bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError([("model.llm", "qlora needs bitsandbytes on the GPU workers: pip install bitsandbytes")]) from None
        from transformers import BitsAndBytesConfig

        extra["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                          bnb_4bit_use_double_quant=True,
                                                          bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(resolve_checkpoint(cfg, preset_root), dtype=dtype,
                                                 trust_remote_code=cfg.trust_remote_code, **extra)
    if cfg.image_delimiters:   # rows for the added tokens, unless the embedding has spare rows already
        vocab = len(load_tokenizer(cfg, preset_root))
        if vocab > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(vocab, mean_resizing=True)
    return model
