"""Named training recipes, with the published numbers in one place.

A recipe is an ordered list of stages; each stage says which data split it reads, which
template renders it, how each component is tuned and the optimisation defaults. A stage
always starts from the previous stage's output (weights and all), so `share` begins from
`base`'s pretrained connector exactly as the TinyLLaVA paper describes.

Hardware-bound settings (workers, precision, ZeRO stage) are not part of a recipe: the
variant's `training:` block sets them for every stage. Offline configs scale the batch
sizes and step counts down there too; these numbers stay the defaults for real runs.
"""

from __future__ import annotations

from .errors import lookup

# LLaVA-1.5 / TinyLLaVA: pretrain lr 1e-3 global batch 256, finetune lr 2e-5 batch 128, one epoch each
_PRETRAIN_TRAINING = {"global_batch": 256, "lr": 1e-3, "epochs": 1, "max_length": 2048,
                      "warmup_ratio": 0.03, "schedule": "cosine"}
_FINETUNE_TRAINING = {"global_batch": 128, "lr": 2e-5, "epochs": 1, "max_length": 3072,
                      "warmup_ratio": 0.03, "schedule": "cosine"}

FULL, FROZEN = {"mode": "full"}, {"mode": "frozen"}

# base (LLaVA-1.5): the connector alone learns to align on captions, plain template
_BASE_PRETRAIN = {"name": "pretrain", "split": "captions", "template": "plain",
                  "vision": FROZEN, "connector": FULL, "llm": FROZEN, "training": _PRETRAIN_TRAINING}
_BASE_FINETUNE = {"name": "finetune", "split": "instruct", "template": "chat",
                  "vision": FROZEN, "connector": FULL, "llm": FULL, "training": _FINETUNE_TRAINING}

# share (TinyLLaVA paper): from base's connector, vision layers 12+ , connector and LLM train at 2e-5
_SHARE_PRETRAIN = {"name": "share_pretrain", "split": "captions", "template": "plain",
                   "vision": {"mode": "partial", "from_layer": 12}, "connector": FULL, "llm": FULL,
                   "training": {**_PRETRAIN_TRAINING, "lr": 2e-5}}

# LLaVA-1.5's LoRA finetune: r 128, alpha 256, lr 2e-4 for the adapters, 2e-5 for the projector
_LORA_FINETUNE = {**_BASE_FINETUNE,
                  "connector": {"mode": "full", "lr": 2e-5},
                  "llm": {"mode": "lora", "lora": {"r": 128, "alpha": 256, "dropout": 0.05}},
                  "training": {**_FINETUNE_TRAINING, "lr": 2e-4}}

RECIPES: dict[str, list[dict]] = {
    "base": [_BASE_PRETRAIN, _BASE_FINETUNE],
    "share": [_BASE_PRETRAIN, _SHARE_PRETRAIN, _BASE_FINETUNE],
    # Prismatic's single-stage: skip alignment, train connector + LLM on instructions only
    "single_stage": [_BASE_FINETUNE],
    "lora": [_BASE_PRETRAIN, _LORA_FINETUNE],
}


def get_recipe(name: str) -> list[dict]:
    """The stage dicts of a named recipe (fresh copies the caller may change)."""
    import copy

    return copy.deepcopy(lookup(RECIPES, "recipe", name, field="recipe"))
