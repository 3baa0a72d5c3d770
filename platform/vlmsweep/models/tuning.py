"""Per-component tuning modes: frozen | full | partial | lora | qlora.

`apply_tuning` sets requires_grad (wrapping a component with peft for LoRA), and returns
optimizer parameter groups — one per component and weight-decay class, each with the
component's learning rate — and a summary that says exactly what trains.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from vlmsweep.config.schema import StageConfig, TuneConfig

from .stack import block_stack
from .vlm import VLM

COMPONENTS = ("vision", "connector", "llm")


@dataclass(frozen=True)
class TuneRow:
    component: str
    mode: str
    trainable: int
    total: int
    lr: float


def _module(vlm: VLM, component: str) -> nn.Module:
    return {"vision": vlm.vision.model, "connector": vlm.connector, "llm": vlm.llm}[component]


def component_module(vlm: VLM, component: str) -> nn.Module:
    """The component's own model, under a peft wrapper if it has one (its weights' home)."""
    module = _module(vlm, component)
    return module.get_base_model() if hasattr(module, "peft_config") else module


def _set(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _partial(vlm: VLM, component: str, from_layer: int) -> None:
    module = _module(vlm, component)
    # fused encoders: each trains from its own layer `from_layer` up
    for model in (vlm.vision.encoders() if component == "vision" else [module]):
        _, stack = block_stack(model)
        for layer in list(stack)[from_layer:]:
            _set(layer, True)
    if component == "llm":
        # the final norm and the output head sit above the stack, so they train too;
        # the input embeddings sit below and stay frozen (tied heads follow the embeddings)
        frozen = {id(p) for p in stack.parameters()} | {id(p) for p in module.get_input_embeddings().parameters()}
        for p in module.parameters():
            if id(p) not in frozen:
                p.requires_grad_(True)


def _lora(vlm: VLM, component: str, tune: TuneConfig) -> None:
    from peft import LoraConfig, get_peft_model

    lora = tune.lora
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules or "all-linear")
    if component == "llm":
        if tune.mode == "qlora":
            from peft import prepare_model_for_kbit_training
            vlm.llm = prepare_model_for_kbit_training(vlm.llm)
        vlm.llm = get_peft_model(vlm.llm, config)
    elif len(vlm.vision.encoders()) > 1:  # models.check refuses it first, with the field
        raise ValueError("LoRA on fused vision encoders is not supported (one adapter wraps one model)")
    else:
        vlm.vision.model = get_peft_model(vlm.vision.model, config)


def apply_tuning(vlm: VLM, stage: StageConfig) -> tuple[list[dict], list[TuneRow]]:
    """Mark what trains in this stage; returns (optimizer param groups, summary rows)."""
    _set(vlm, False)
    for component, tune in stage.components().items():
        if tune.mode == "full":
            _set(_module(vlm, component), True)
        elif tune.mode == "partial":
            _partial(vlm, component, tune.from_layer)
        elif tune.mode in ("lora", "qlora"):
            _lora(vlm, component, tune)
    # modules LLaVA-style features never pass through would get no gradient: never train them
    for p in vlm.vision.unused_parameters():
        p.requires_grad_(False)

    groups, rows = [], []
    for component, tune in stage.components().items():
        module = _module(vlm, component)
        lr = tune.lr or stage.training.lr
        params = [p for p in module.parameters() if p.requires_grad]
        # no weight decay on biases and norms (1-d tensors), the usual AdamW practice
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        for ps, wd in ((decay, stage.training.weight_decay), (no_decay, 0.0)):
            if ps:
                groups.append({"params": ps, "lr": lr, "weight_decay": wd, "name": f"{component}/{'decay' if wd else 'no_decay'}"})
        rows.append(TuneRow(component, tune.mode, sum(p.numel() for p in params),
                            sum(p.numel() for p in module.parameters()), lr))
    return groups, rows


def format_summary(rows: list[TuneRow]) -> str:
    lines = [f"{'component':<10} {'mode':<8} {'trainable':>12} {'total':>12} {'lr':>9}"]
    for r in rows:
        lines.append(f"{r.component:<10} {r.mode:<8} {r.trainable:>12,} {r.total:>12,} {r.lr:>9.2e}")
    return "\n".join(lines)
