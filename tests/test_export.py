"""`vlmsweep export --format hf-llava`: the exported folder is the same model in plain transformers.

Each case trains a stage the way the worker does (perturbed weights stand in for training;
two keep unmerged LoRA adapters, one on both the LLM and the tower), exports it, and loads it back with
AutoModelForImageTextToText / AutoProcessor only. On the prompt the processor's chat template
builds, the input ids equal vlmsweep's `prompt_ids`, the pixels equal vlmsweep's preprocessing
(pad-to-square included), the logits equal vlmsweep's VLM's and greedy generation gives the
same tokens.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from _tiny import random_image
from vlmsweep.config.errors import ConfigError, InputError
from vlmsweep.config.load import dump_resolved, resolve
from vlmsweep.config.schema import LLMConfig
from vlmsweep.data.tokenize import prompt_ids, special_tokens, stop_token_id
from vlmsweep.eval.generate import load_checkpoint
from vlmsweep.export.hf_llava import export_hf_llava
from vlmsweep.export.chat_template import jinja_template
from vlmsweep.export.cli import add_export_parser
from vlmsweep.models.llm import load_tokenizer
from vlmsweep.models.templates import render
from vlmsweep.models.vlm import IMAGE_TOKEN_ID, build_vlm
from vlmsweep.train.stage_output import save_stage
from vlmsweep.train.worker import build_stage_model

TOLERANCE = 1e-4
FULL, FROZEN = {"mode": "full"}, {"mode": "frozen"}
LORA = {"mode": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
# case: (vision block, llm family, connector, vision mode, llm mode)
CASES = {
    "clip-llama-mlp2x_gelu-lora": ({"family": "clip"}, "llama", "mlp2x_gelu", FULL, LORA),
    "siglip-qwen2-linear": ({"family": "siglip"}, "qwen2", "linear", FROZEN, FULL),
    "dinov2_cls-gemma-mlp2x_gelu": ({"family": "dinov2", "feature_select": "cls_patch", "feature_layer": -1,
                                     "image_aspect": "resize"}, "gemma", "mlp2x_gelu", FULL, FULL),
    "clip-mistral-mlp1x_gelu-lora_both": ({"family": "clip", "feature_layer": 2}, "mistral", "mlp1x_gelu", LORA, LORA),
}
QUESTION = "What colour is the ball?"


def variant(vision: dict, llm: str, connector: str, vision_mode: dict, llm_mode: dict, name: str = "export"):
    stage = {"name": "finetune", "split": "instruct", "template": "chat", "vision": vision_mode, "llm": llm_mode,
             "connector": FULL, "training": {"steps": 1, "global_batch": 1, "micro_batch": 1}}
    return resolve({"name": name, "model": {"vision": vision, "llm": {"family": llm}, "connector": {"name": connector}},
                    "recipe": {"name": "one", "stages": [stage]}})


def trained_stage(cfg, preset_root, out, init=None, index=0) -> str:
    """A stage output as the worker writes it, with every trainable parameter moved."""
    vlm, _, _ = build_stage_model(cfg, index, preset_root, init)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in vlm.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    stage = cfg.recipe.stages[index]
    save_stage(vlm, out, stage=stage.name, modes={c: t.mode for c, t in stage.components().items()},
               init_dir=init, config_yaml=dump_resolved(cfg), summary={})
    return str(out)


def vlm_logits(vlm, ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        hidden = vlm.llm.get_decoder()(inputs_embeds=vlm.embed(ids, pixels), use_cache=False).last_hidden_state
        return vlm.llm.get_output_embeddings()(hidden)


@pytest.mark.parametrize("case", list(CASES))
def test_exported_llava_equals_the_vlm(case, preset_root, tmp_path):
    cfg = variant(*CASES[case])
    stage = trained_stage(cfg, preset_root, tmp_path / "stage")
    done = export_hf_llava(stage, tmp_path / "hf", preset_root)
    ref = load_checkpoint(stage, preset_root)   # how vlmsweep serves it: LoRA adapters unmerged

    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "hf").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "hf")
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    image = random_image(3, height=24, width=32)   # not square: pad-to-square runs where configured
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")

    # the prompt training used, and the pixels vlmsweep computes
    image_id = done["image_token_id"]
    ids = inputs["input_ids"].masked_fill(inputs["input_ids"] == image_id, IMAGE_TOKEN_ID)
    want = prompt_ids(ref.tokenizer, ref.template, [{"role": "user", "text": f"<image>\n{QUESTION}"}],
                      ref.vlm.image_tokens)
    assert ids[0].tolist() == want.tolist()
    pixels = ref.images([image])
    np.testing.assert_allclose(inputs["pixel_values"].numpy(), pixels, atol=1e-6)

    # logits on the same ids and pixels
    with torch.no_grad():
        got = model(**inputs).logits
    expected = vlm_logits(ref.vlm, ids, inputs["pixel_values"])
    diff = (got[..., :expected.shape[-1]] - expected).abs().max().item()
    print(f"{case}: max logit difference {diff:.3e}")
    assert diff <= TOLERANCE, f"{case}: max logit difference {diff:.2e}"

    # greedy generation: the same tokens
    stop, pad = stop_token_id(ref.tokenizer, ref.template), ref.tokenizer.pad_token_id
    mine = ref.vlm.generate(ids, torch.ones_like(ids), inputs["pixel_values"], max_new_tokens=12,
                            stop_token_id=stop, pad_token_id=pad)[0].tolist()
    theirs = model.generate(**inputs, max_new_tokens=12)[0, ids.shape[1]:].tolist()
    assert theirs == mine and len(mine) >= 1
    assert isinstance(processor.decode(theirs, skip_special_tokens=True), str)


TEMPLATE_OF = {"llama": "vicuna", "qwen2": "chatml", "gemma": "gemma", "mistral": "mistral"}


def hf_messages(conversation: list[dict]) -> list[dict]:
    """vlmsweep's turns as Hugging Face messages: '<image>\\n' prefixes become image parts."""
    out = []
    for turn in conversation:
        text, parts = turn["text"], []
        while text.startswith("<image>"):
            parts.append({"type": "image"})
            text = text[len("<image>"):]
        out.append({"role": turn["role"], "content": [*parts, {"type": "text", "text": text.removeprefix("\n")}]
                    if parts else text})
    return out


@pytest.mark.parametrize("family,template", [*TEMPLATE_OF.items(), ("llama", "plain")])
def test_jinja_templates_render_what_vlmsweep_renders(family, template, preset_root):
    tokenizer = load_tokenizer(LLMConfig(family=family), preset_root)
    jinja = jinja_template(template, special_tokens(tokenizer))
    chats = [[{"role": "user", "text": "<image>\nWhat is it?"}, {"role": "assistant", "text": "A cube."}]]
    if template != "plain":   # plain takes one pair, and no system text
        chats += [[{"role": "system", "text": "Be brief."}, {"role": "user", "text": "<image><image>\nSame?"},
                   {"role": "assistant", "text": "No."}, {"role": "user", "text": "Why?"},
                   {"role": "assistant", "text": "Shapes differ."}],
                  [{"role": "user", "text": "Hi."}, {"role": "assistant", "text": "Hello!"}]]
    for chat in chats:
        trained = "".join(text for text, _ in render(template, chat, special_tokens(tokenizer)))
        assert tokenizer.apply_chat_template(hf_messages(chat), chat_template=jinja, tokenize=False) == trained
        prompt = render(template, chat[:-1], special_tokens(tokenizer), for_generation=True)
        want = "".join(text for text, _ in prompt[:-1]) + prompt[-1][0].rstrip(" ")   # as prompt_ids cuts it
        got = tokenizer.apply_chat_template(hf_messages(chat[:-1]), chat_template=jinja, tokenize=False,
                                            add_generation_prompt=True)
        assert got == want


def export_cli(argv: list[str]):
    parser = argparse.ArgumentParser(prog="vlmsweep")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", *argv])
    return args.fn(args)


@pytest.mark.parametrize("connector", ["resampler", "qformer", "pixel_shuffle", "ln_mlp", "mlp3x_gelu"])
def test_connectors_llava_cannot_express_are_refused_in_one_line(connector, preset_root, tmp_path):
    message = refused_export(variant({"family": "siglip"}, "llama", connector, FROZEN, FULL), preset_root, tmp_path)
    assert "\n" not in message and f"connector {connector!r}" in message and "Llava" in message


def refused_export(cfg, preset_root, tmp_path) -> str:
    """Save a finetune stage of `cfg` and export it as hf-llava: the refusal's message (nothing written)."""
    torch.manual_seed(0)
    stage = tmp_path / "stage"
    save_stage(build_vlm(cfg.model, preset_root), stage, stage="finetune", init_dir=None, summary={},
               modes={"vision": "frozen", "connector": "full", "llm": "full"}, config_yaml=dump_resolved(cfg))
    with pytest.raises(ConfigError) as err:
        export_cli([str(stage), str(tmp_path / "hf"), "--format", "hf-llava", "--work-dir", str(tmp_path / "work")])
    assert not (tmp_path / "hf").exists()
    return str(err.value)


def test_an_llm_whose_head_has_a_bias_is_refused(preset_root, tmp_path):
    cfg = variant({"family": "siglip"}, "phi", "mlp2x_gelu", FROZEN, FULL)
    torch.manual_seed(0)
    save_stage(build_vlm(cfg.model, preset_root), tmp_path / "stage", stage="finetune", init_dir=None, summary={},
               modes={"vision": "frozen", "connector": "full", "llm": "full"}, config_yaml=dump_resolved(cfg))
    with pytest.raises(InputError, match="bias on its output head"):
        export_hf_llava(str(tmp_path / "stage"), tmp_path / "hf", preset_root)
    assert not (tmp_path / "hf").exists()


def test_sweep_slash_variant_exports_the_variants_last_training_stage(preset_root, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from vlmsweep.config.workdir import WorkDir
    from vlmsweep.export.resolve import resolve_checkpoint

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = WorkDir.at(tmp_path / "work")
    cfg = variant({"family": "siglip"}, "llama", "mlp2x_gelu", FROZEN, FULL)
    first = trained_stage(cfg, preset_root, tmp_path / "work" / "stages" / "pretrain")
    last = trained_stage(cfg, preset_root, tmp_path / "work" / "stages" / "finetune", init=first)
    client = MlflowClient(work.tracking_uri)
    eid = client.create_experiment("vlmsweep")

    def run(name, tags):
        return client.create_run(eid, run_name=name, tags=tags).info.run_id

    sweep = run("grid", {"vlmsweep.kind": "sweep", "vlmsweep.sweep_name": "grid", "vlmsweep.work_dir": work.uri})
    var = run("sig-llama", {"vlmsweep.kind": "variant", "mlflow.parentRunId": sweep})
    for name, out in (("pretrain", first), ("finetune", last), ("eval", str(tmp_path / "work" / "evals" / "e"))):
        client.set_tag(var, f"vlmsweep.stage.{name}", run(name, {"vlmsweep.kind": "stage", "vlmsweep.output": out}))

    assert resolve_checkpoint("grid/sig-llama", work) == last
    with pytest.raises(InputError, match="has no variant 'nope'; its variants: sig-llama"):
        resolve_checkpoint("grid/nope", work)
    assert export_cli(["grid/sig-llama", str(tmp_path / "hf"), "--format", "hf-llava", "--work-dir", work.uri]) == 0
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "hf" / "chat_template.jinja").is_file()


@pytest.mark.parametrize("connector", ["identity", "linear"])
def test_one_linear_or_none_is_llavas_projector_with_an_exact_identity(connector):
    """Llava's projector is Linear → act → Linear: a single Linear (or none) rides on a 'linear'
    act and an identity second Linear, which changes nothing, bit for bit."""
    from types import SimpleNamespace

    from transformers import LlavaConfig
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    from vlmsweep.export.hf_llava import EXPRESSIBLE, _projector
    from vlmsweep.models.connectors import build_connector

    dim = 16
    torch.manual_seed(0)
    connector_module = build_connector(connector, dim, dim, 4)
    fake = SimpleNamespace(connector=connector_module, llm=SimpleNamespace(config=SimpleNamespace(hidden_size=dim)))
    config = LlavaConfig(vision_config={"model_type": "clip_vision_model", "hidden_size": dim, "num_attention_heads": 4},
                         text_config={"model_type": "llama", "hidden_size": dim, "num_attention_heads": 4},
                         projector_hidden_act=EXPRESSIBLE[connector])
    projector = LlavaMultiModalProjector(config)
    projector.load_state_dict(_projector(fake, EXPRESSIBLE[connector]), strict=True)
    features = torch.randn(2, 4, dim)
    with torch.no_grad():
        assert torch.equal(projector(features), connector_module(features))


def test_image_delimiters_are_refused_in_one_line(preset_root, tmp_path):
    cfg = variant({"family": "siglip"}, "llama", "mlp2x_gelu", FROZEN, FULL)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(
        update={"llm": cfg.model.llm.model_copy(update={"image_delimiters": True})})})
    message = refused_export(cfg, preset_root, tmp_path)
    assert "\n" not in message and "image_delimiters" in message


def test_fused_encoders_are_refused_in_one_line(preset_root, tmp_path):
    cfg = variant([{"family": "dinov2"}, {"family": "siglip"}], "llama", "mlp2x_gelu", FROZEN, FULL)
    message = refused_export(cfg, preset_root, tmp_path)
    assert "\n" not in message and "fused" in message and "one vision tower" in message
