"""Quantized inference (bitsandbytes 4-bit NF4 or 8-bit LLM.int8) for chat, and later eval and demo.

bitsandbytes is an optional dependency (`pip install 'vlmsweep[gpu]'`): its kernels need a
CUDA GPU, so `check_quantize` refuses at once, in one line, on a machine without one or
without the package, before any weights are read. Only the LLM is quantized; the vision
tower and the connector stay in full precision on the GPU (as QLoRA training does, and as
LLaVA's --load-4bit / --load-8bit do for the language model's Linear layers).

Untested here: no machine this project runs its tests on has a GPU.
"""

from __future__ import annotations

import importlib.util
import tempfile

import torch

from vlmsweep.config.errors import InputError

QUANTIZE = ("4bit", "8bit")
# modules of an hf-llava export that stay unquantized: the tower, the projector, the head
LLAVA_KEEP = ["vision_tower", "multi_modal_projector", "lm_head"]


def check_quantize(mode: str | None, device: str = "auto", field: str = "--quantize") -> None:
    """Raise one-line InputError when `mode` can't run here; a no-op for mode None."""
    if mode is None:
        return
    if mode not in QUANTIZE:
        raise InputError([(field, f"unknown mode {mode!r}; allowed: {', '.join(QUANTIZE)}")])
    if device == "cpu" or not torch.cuda.is_available():
        raise InputError([(field, f"{mode} inference needs a CUDA GPU (bitsandbytes kernels); "
                                  + ("--device cpu was given" if device == "cpu" else "this machine has none")
                                  + ": leave out --quantize to run in full precision")])
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InputError([(field, f"{mode} needs bitsandbytes: pip install 'vlmsweep[gpu]' (or bitsandbytes)")])


def bnb_config(mode: str, keep: list[str] | None = None):
    """The transformers BitsAndBytesConfig for `mode`; `keep` names modules left unquantized."""
    from transformers import BitsAndBytesConfig

    extra = {"llm_int8_skip_modules": keep} if keep else {}
    if mode == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16, **extra)
    return BitsAndBytesConfig(load_in_8bit=True, **extra)


def quantize_llm(llm, mode: str, device: str = "cuda"):
    """A trained causal LM (weights already loaded, LoRA adapters merged or not) quantized on `device`.

    bitsandbytes quantizes while loading, so the LM is written to a temporary folder and read
    back with the quantization config. Unmerged adapters are set aside first and put back on
    the quantized base, still unmerged (BakLLaVA serves LoRA that way).
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory(prefix="vlmsweep-quantize-") as tmp:
        adapter = None
        if isinstance(llm, PeftModel):
            adapter = f"{tmp}/adapter"
            llm.save_pretrained(adapter)
            llm = llm.unload()   # the base weights, adapters removed without merging
        llm.save_pretrained(f"{tmp}/base")
        quantized = AutoModelForCausalLM.from_pretrained(f"{tmp}/base", quantization_config=bnb_config(mode),
                                                         device_map={"": device}, dtype=torch.bfloat16)
        if adapter:
            quantized = PeftModel.from_pretrained(quantized, adapter)
    return quantized.eval()


def llava_quantized_kwargs(mode: str | None, device: str) -> dict:
    """from_pretrained keyword arguments for an hf-llava export (quantized or not)."""
    if mode is None:
        return {}
    return {"quantization_config": bnb_config(mode, keep=LLAVA_KEEP), "device_map": {"": device},
            "dtype": torch.bfloat16}
