"""Every tune-mode transition across stages round-trips through save_stage and load_into.

Each chain is built the way the worker builds it (build_stage_model: the previous stage
loaded with its adapters merged, then this stage's tuning applied), "trained" by perturbing
what trains, and saved; a fresh model loaded from the last stage, with its adapters kept
separate or merged, must give the in-memory model's logits.
"""

from __future__ import annotations

import pytest
import torch

from vlmsweep.config.load import dump_resolved, resolve
from vlmsweep.models.vlm import IMAGE_TOKEN_ID, build_vlm
from vlmsweep.train.stage_output import load_into, read_manifest, save_stage
from vlmsweep.train.worker import build_stage_model

LORA = {"mode": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
# other rank, other targets: the first adapter must be merged into the base before this one
LORA_NEW = {"mode": "lora", "lora": {"r": 2, "alpha": 6, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}}
VISION_LORA = {"mode": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
FROZEN, FULL, PARTIAL = {"mode": "frozen"}, {"mode": "full"}, {"mode": "partial", "from_layer": 1}

# (llm modes per stage, vision modes per stage)
CHAINS = {
    "lora-frozen": ([LORA, FROZEN], [FROZEN, FROZEN]),
    "lora-full": ([LORA, FULL], [FROZEN, FROZEN]),
    "frozen-lora": ([FROZEN, LORA], [FROZEN, FROZEN]),
    "partial-lora": ([PARTIAL, LORA], [FROZEN, FROZEN]),
    "lora-lora_new_options": ([LORA, LORA_NEW], [FROZEN, FROZEN]),
    "lora-frozen-lora": ([LORA, FROZEN, LORA_NEW], [FROZEN, FROZEN, FROZEN]),
    "vision_lora-frozen-lora": ([FROZEN, FROZEN, FROZEN], [VISION_LORA, FROZEN, VISION_LORA]),
}
TOLERANCE = 1e-5


def variant(llm_modes: list[dict], vision_modes: list[dict]):
    stages = [{"name": f"s{i}", "split": "instruct", "template": "chat", "vision": vision, "llm": llm,
               "connector": FULL, "training": {"steps": 1, "global_batch": 1, "micro_batch": 1}}
              for i, (llm, vision) in enumerate(zip(llm_modes, vision_modes))]
    return resolve({"name": "lora-transitions", "recipe": {"name": "chain", "stages": stages}})


def perturb(vlm, seed: int) -> None:
    """Stands in for training: every trainable parameter moves (LoRA's zero B included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vlm.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))


def logits(vlm, image_tokens: int) -> torch.Tensor:
    ids = torch.tensor([[5, 17, 33] + [IMAGE_TOKEN_ID] * image_tokens + [40, 41, 42, 43]])
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    vlm.eval()
    with torch.no_grad():
        hidden = vlm.llm.get_decoder()(inputs_embeds=vlm.embed(ids, pixels), use_cache=False).last_hidden_state
        return vlm.llm.get_output_embeddings()(hidden)


@pytest.mark.parametrize("chain", list(CHAINS))
def test_a_tune_mode_transition_round_trips_unmerged_and_merged(chain, preset_root, tmp_path):
    cfg = variant(*CHAINS[chain])
    init = None
    for index, stage in enumerate(cfg.recipe.stages):
        vlm, _, _ = build_stage_model(cfg, index, preset_root, init)
        perturb(vlm, seed=index)
        out = str(tmp_path / stage.name)
        save_stage(vlm, out, stage=stage.name, modes={c: t.mode for c, t in stage.components().items()},
                   init_dir=init, config_yaml=dump_resolved(cfg), summary={})
        init = out
    want = logits(vlm, vlm.image_tokens)

    manifest = read_manifest(init)
    for component, entry in manifest["components"].items():
        modes = [getattr(s, component).mode for s in cfg.recipe.stages]
        if "lora" in modes:
            last = max(i for i, m in enumerate(modes) if m != "frozen")
            # an adapter is kept unless a later stage trained the whole component after it
            assert bool(entry["lora"]) == (modes[last] == "lora"), (component, entry)
            if modes[last] == "lora" and "lora" in modes[:last]:
                assert entry["weights"], "the merged earlier adapter must be saved as the base"

    for merge in (False, True):
        torch.manual_seed(123)  # a fresh connector init that load_into must overwrite
        fresh = build_vlm(cfg.model, preset_root)
        load_into(fresh, init, merge_lora=merge)
        got = logits(fresh, fresh.image_tokens)
        diff = (got - want).abs().max().item()
        assert diff <= TOLERANCE, f"{chain}: merge_lora={merge}: max logit difference {diff:.2e}"


def test_a_lost_adapter_would_be_caught(preset_root, tmp_path):
    """The check above is sensitive: dropping the stage-1 adapter changes the logits."""
    cfg = variant([LORA, FROZEN], [FROZEN, FROZEN])
    vlm, _, _ = build_stage_model(cfg, 0, preset_root, None)
    perturb(vlm, seed=0)
    trained = logits(vlm, vlm.image_tokens)
    base = build_vlm(cfg.model, preset_root)
    base.connector.load_state_dict(vlm.connector.state_dict())
    without = logits(base, base.image_tokens)
    assert (trained - without).abs().max().item() > 100 * TOLERANCE
