"""Tuning modes: exactly the parameters a mode names train, they (and only they) get gradients,
and the summary rows and optimizer groups carry the per-component counts and learning rates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _tiny import CONVERSATIONS, Tiny
from vlmsweep.config.load import resolve
from vlmsweep.data.packing import Row, collate
from vlmsweep.models.tuning import apply_tuning, component_module, format_summary

STAGE_LR, LLM_LR, CONNECTOR_LR = 1e-3, 5e-4, 2e-5
# block stacks and never-used modules, spelled out per family (independent of the package's lookup)
VISION_STACK = {"clip": "encoder.layers", "siglip": "encoder.layers", "dinov2": "encoder.layer", "dinov2_reg": "encoder.layer"}
VISION_UNUSED = {"clip": ("post_layernorm.",), "siglip": ("post_layernorm.", "head."), "dinov2": ("layernorm.",),
                 "dinov2_reg": ("layernorm.",)}
LLM_STACK, LLM_EMBED = "model.layers", "model.embed_tokens."
LORA_R = 4


def stage_for(vision: dict, llm: dict, connector: dict | None = None, weight_decay: float = 0.0):
    """A one-stage variant built through the user-facing resolve (single_stage recipe + overrides)."""
    cfg = resolve({
        "model": {"vision": {"family": vision.pop("family", "siglip")}, "llm": {"family": llm.pop("family", "llama")}},
        "recipe": "single_stage",
        "training": {"steps": 1, "global_batch": 4, "micro_batch": 4, "lr": STAGE_LR, "weight_decay": weight_decay},
        "stages": {"finetune": {"vision": vision, "llm": llm,
                                "connector": connector or {"mode": "full", "lr": CONNECTOR_LR}}},
    })
    return cfg, cfg.recipe.stages[0]


def layers_from(stack: str, from_layer: int):
    def pick(name: str) -> bool:
        if not name.startswith(stack + "."):
            return False
        return int(name[len(stack) + 1:].split(".")[0]) >= from_layer
    return pick


def expected_names(module: nn.Module, pick) -> set[str]:
    return {n for n, _ in module.named_parameters() if pick(n)}


def trainable(module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def numel(module: nn.Module, names: set[str]) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if n in names)


def lora_count(module: nn.Module, stack: str, r: int) -> int:
    """Parameters LoRA adds: r × (in + out) for every Linear inside the block stack."""
    return sum(r * (m.in_features + m.out_features) for n, m in module.named_modules()
               if isinstance(m, nn.Linear) and n.startswith(stack + "."))


def batch_of(tiny: Tiny):
    samples = [tiny.sample(0, *CONVERSATIONS[0]), tiny.sample(1, *CONVERSATIONS[1])]
    return collate([Row(samples)], tiny.pad_id)


def loss_of(vlm, batch):
    return vlm(batch.input_ids, batch.targets, batch.pixel_values, batch.position_ids, batch.attention_mask)


def optimizer(groups):
    return torch.optim.AdamW([{k: v for k, v in g.items() if k != "name"} for g in groups])


def check_grads(vlm, frozen_ok_zero: set[int] = frozenset()):
    for name, p in vlm.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"trainable {name} got no gradient"
            if id(p) not in frozen_ok_zero:
                assert p.grad.abs().sum() > 0, f"trainable {name} got an all-zero gradient"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"


def rows_by_component(rows):
    return {r.component: r for r in rows}


@pytest.mark.parametrize("vision_family", ["clip", "siglip", "dinov2", "dinov2_reg"])
def test_frozen_and_full_train_exactly_their_components(preset_root, vision_family):
    cfg, stage = stage_for({"family": vision_family, "mode": "full"}, {"mode": "frozen"})
    tiny = Tiny(preset_root, cfg.model)
    vlm = tiny.vlm
    groups, rows = apply_tuning(vlm, stage)

    vision = vlm.vision.model
    unused = VISION_UNUSED[vision_family]
    # parameters the features never pass through (Dinov2's masked-image-modelling token included)
    never = lambda n: n.startswith(unused) or n == "embeddings.mask_token"  # noqa: E731
    want_vision = expected_names(vision, lambda n: not never(n))
    assert trainable(vision) == want_vision
    assert all(not p.requires_grad for n, p in vision.named_parameters() if n.startswith(unused))
    assert trainable(vlm.connector) == {n for n, _ in vlm.connector.named_parameters()}
    assert trainable(vlm.llm) == set()

    r = rows_by_component(rows)
    assert (r["vision"].mode, r["connector"].mode, r["llm"].mode) == ("full", "full", "frozen")
    assert r["vision"].trainable == numel(vision, want_vision)
    assert r["connector"].trainable == r["connector"].total == sum(p.numel() for p in vlm.connector.parameters())
    assert r["llm"].trainable == 0 and r["llm"].total == sum(p.numel() for p in vlm.llm.parameters())
    assert r["vision"].total == sum(p.numel() for p in vision.parameters())
    assert (r["vision"].lr, r["connector"].lr, r["llm"].lr) == (STAGE_LR, CONNECTOR_LR, STAGE_LR)

    loss_of(vlm, batch_of(tiny)).backward()
    check_grads(vlm)


@pytest.mark.parametrize("vision_family", ["clip", "siglip", "dinov2", "dinov2_reg"])
def test_partial_trains_only_layers_from_from_layer_plus_llm_norm_and_head(preset_root, vision_family):
    cfg, stage = stage_for({"family": vision_family, "mode": "partial", "from_layer": 1},
                           {"mode": "partial", "from_layer": 1, "lr": LLM_LR})
    tiny = Tiny(preset_root, cfg.model)
    vlm = tiny.vlm
    groups, rows = apply_tuning(vlm, stage)

    # vision: encoder layers 1.. of the 3 that run (feature_layer -2 of 4); nothing else
    vision = vlm.vision.model
    want_vision = expected_names(vision, layers_from(VISION_STACK[vision_family], 1))
    assert {n.split(".")[2] for n in want_vision} == {"1", "2"}
    assert trainable(vision) == want_vision
    # llm: layers 1.., the final norm and lm_head; never layer 0 or the input embeddings
    llm = vlm.llm
    want_llm = expected_names(llm, lambda n: not n.startswith(LLM_EMBED) and not layers_from(LLM_STACK, 0)(n)
                              or layers_from(LLM_STACK, 1)(n))
    assert trainable(llm) == want_llm
    assert {"model.norm.weight", "lm_head.weight"} <= want_llm
    assert not any(n.startswith((LLM_EMBED, "model.layers.0.")) for n in want_llm)

    r = rows_by_component(rows)
    assert (r["vision"].mode, r["llm"].mode) == ("partial", "partial")
    assert r["vision"].trainable == numel(vision, want_vision)
    assert r["llm"].trainable == numel(llm, want_llm)
    assert 0 < r["llm"].trainable < r["llm"].total
    assert (r["vision"].lr, r["connector"].lr, r["llm"].lr) == (STAGE_LR, CONNECTOR_LR, LLM_LR)
    summary = format_summary(rows)
    assert f"{r['llm'].trainable:,}" in summary and "partial" in summary

    loss_of(vlm, batch_of(tiny)).backward()
    check_grads(vlm)


def test_partial_llm_from_layer_zero_still_keeps_the_input_embeddings_frozen(preset_root):
    cfg, stage = stage_for({"mode": "frozen"}, {"mode": "partial", "from_layer": 0})
    tiny = Tiny(preset_root, cfg.model)
    apply_tuning(tiny.vlm, stage)
    llm = tiny.vlm.llm
    assert trainable(llm) == {n for n, _ in llm.named_parameters() if not n.startswith(LLM_EMBED)}


@pytest.mark.parametrize("llm_family", ["llama", "phi"])
def test_lora_on_the_llm_trains_only_adapters_on_every_block_linear(preset_root, llm_family):
    cfg, stage = stage_for({"mode": "frozen"},
                           {"family": llm_family, "mode": "lora", "lr": LLM_LR, "lora": {"r": LORA_R, "alpha": 8}})
    tiny = Tiny(preset_root, cfg.model)
    vlm = tiny.vlm
    base = vlm.llm
    base_total = sum(p.numel() for p in base.parameters())
    adapters = lora_count(base, LLM_STACK, LORA_R)
    assert adapters > 0
    groups, rows = apply_tuning(vlm, stage)

    assert hasattr(vlm.llm, "peft_config") and component_module(vlm, "llm") is base
    names = trainable(vlm.llm)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert all(".layers." in n for n in names)  # adapters live in the blocks, not on lm_head
    assert trainable(vlm.vision.model) == set()
    r = rows_by_component(rows)
    assert r["llm"].mode == "lora"
    assert r["llm"].trainable == adapters
    assert r["llm"].total == base_total + adapters
    assert r["llm"].lr == LLM_LR and r["vision"].trainable == 0

    batch = batch_of(tiny)
    loss_of(vlm, batch).backward()
    # LoRA starts with B = 0, so only B has a gradient on the very first step
    lora_a = {id(p) for n, p in vlm.named_parameters() if ".lora_A." in n}
    check_grads(vlm, frozen_ok_zero=lora_a)
    assert all(p.grad.abs().sum() > 0 for n, p in vlm.named_parameters() if ".lora_B." in n)
    opt = optimizer(groups)
    opt.step()
    opt.zero_grad(set_to_none=True)
    loss_of(vlm, batch).backward()
    check_grads(vlm)


@pytest.mark.parametrize("vision_family", ["clip", "siglip", "dinov2", "dinov2_reg"])
def test_lora_on_the_vision_tower_trains_only_adapters_in_its_blocks(preset_root, vision_family):
    cfg, stage = stage_for({"family": vision_family, "mode": "lora", "lora": {"r": LORA_R}}, {"mode": "frozen"})
    tiny = Tiny(preset_root, cfg.model)
    vlm = tiny.vlm
    base = vlm.vision.model
    adapters = lora_count(base, VISION_STACK[vision_family], LORA_R)
    base_total = sum(p.numel() for p in base.parameters())
    groups, rows = apply_tuning(vlm, stage)

    assert component_module(vlm, "vision") is base
    names = trainable(vlm.vision.model)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert trainable(vlm.llm) == set()
    r = rows_by_component(rows)
    assert r["vision"].trainable == adapters
    assert r["vision"].total == base_total + adapters
    assert r["vision"].lr == STAGE_LR

    batch = batch_of(tiny)
    loss_of(vlm, batch).backward()
    check_grads(vlm, frozen_ok_zero={id(p) for n, p in vlm.named_parameters() if ".lora_A." in n})
    opt = optimizer(groups)
    opt.step()
    opt.zero_grad(set_to_none=True)
    loss_of(vlm, batch).backward()
    check_grads(vlm)


def test_all_frozen_stage_trains_nothing(preset_root):
    cfg, stage = stage_for({"mode": "frozen"}, {"mode": "frozen"}, connector={"mode": "frozen"})
    tiny = Tiny(preset_root, cfg.model)
    groups, rows = apply_tuning(tiny.vlm, stage)
    assert groups == []
    assert all(r.trainable == 0 and r.mode == "frozen" for r in rows)
    assert not any(p.requires_grad for p in tiny.vlm.parameters())


def test_optimizer_groups_have_per_component_lr_and_decay_classes(preset_root):
    cfg, stage = stage_for({"mode": "partial", "from_layer": 1}, {"mode": "full", "lr": LLM_LR}, weight_decay=0.1)
    tiny = Tiny(preset_root, cfg.model)
    vlm = tiny.vlm
    groups, rows = apply_tuning(vlm, stage)
    lr_of = {"vision": STAGE_LR, "connector": CONNECTOR_LR, "llm": LLM_LR}

    seen: dict[int, str] = {}
    for g in groups:
        component, kind = g["name"].split("/")
        assert g["lr"] == lr_of[component]
        assert kind in ("decay", "no_decay")
        assert g["weight_decay"] == (0.1 if kind == "decay" else 0.0)
        assert all((p.ndim >= 2) == (kind == "decay") for p in g["params"])
        for p in g["params"]:
            assert id(p) not in seen, "a parameter is in two groups"
            seen[id(p)] = component
    assert {g["name"] for g in groups} == {f"{c}/{k}" for c in lr_of for k in ("decay", "no_decay")}
    # the groups hold exactly the trainable parameters, each under its own component
    assert set(seen) == {id(p) for p in vlm.parameters() if p.requires_grad}
    for component, module in (("vision", vlm.vision.model), ("connector", vlm.connector), ("llm", vlm.llm)):
        assert {id(p) for p in module.parameters() if p.requires_grad} == {i for i, c in seen.items() if c == component}
    r = rows_by_component(rows)
    for component in lr_of:
        assert r[component].lr == lr_of[component]
        assert r[component].trainable == sum(p.numel() for g in groups if g["name"].startswith(component + "/")
                                             for p in g["params"])

    # a real optimizer keeps those rates, and a step moves trainable weights only
    opt = optimizer(groups)
    assert sorted({g["lr"] for g in opt.param_groups}) == sorted(set(lr_of.values()))
    before = {n: p.detach().clone() for n, p in vlm.named_parameters()}
    loss_of(vlm, batch_of(tiny)).backward()
    opt.step()
    for n, p in vlm.named_parameters():
        changed = not torch.equal(before[n], p)
        assert changed == p.requires_grad, n


def test_retuning_a_model_resets_what_trains(preset_root):
    """apply_tuning starts from all-frozen: a second stage's modes replace the first's."""
    cfg, full = stage_for({"mode": "full"}, {"mode": "full"})
    _, connector_only = stage_for({"mode": "frozen"}, {"mode": "frozen"})
    tiny = Tiny(preset_root, cfg.model)
    apply_tuning(tiny.vlm, full)
    _, rows = apply_tuning(tiny.vlm, connector_only)
    assert trainable(tiny.vlm) == {f"connector.{n}" for n, _ in tiny.vlm.connector.named_parameters()}
    assert [r.trainable > 0 for r in rows] == [False, True, False]
