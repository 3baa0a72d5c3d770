"""Model cards: a README.md per zoo artifact, written from its zoo.json summary."""

from __future__ import annotations

_PURPOSE = {
    "tokenizer": "The byte-level BPE tokenizer every zoo LM and text tower shares",
    "llm": "A tiny causal LM, stand-in for the paper's LLM of this family",
    "vision": "A tiny vision encoder (vision tower only), stand-in for the paper's encoder of this family",
}


def model_card(info: dict) -> str:
    world = info.get("world", {})
    kind = info.get("kind", "?")
    lines = [
        f"# zoo:{info['name']}",
        "",
        f"{_PURPOSE.get(kind, kind)}, pretrained by `vlmsweep zoo build` on vlmsweep's synthetic world.",
        "Load it with the checkpoint name `zoo:" + info["name"] + "` or this directory's path.",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `{info.get('class', '?')}` |",
        f"| data | synthetic world seed={world.get('seed')} size={world.get('size')} "
        f"image_size={world.get('image_size')} |",
    ]
    if kind == "tokenizer":
        lines += [f"| vocabulary | {info['vocab_size']} tokens, trained on {info['texts']} texts |",
                  f"| special tokens | {', '.join(f'`{t}`' for t in info['special_tokens'])} |"]
    else:
        spec = info.get("spec", {})
        lines += [
            f"| parameters | {info['params']:,} |",
            f"| steps | {info['steps']} (batch {spec.get('batch')}, lr {spec.get('lr')}, AdamW, cosine) |",
            f"| loss | first {info['first_loss']:.4f}, final {info['final_loss']:.4f} (mean of the last tenth) |",
        ]
        if info.get("tokenizer_hash"):  # image-only encoders never read text
            lines.append(f"| tokenizer | zoo:tokenizer (content hash {info['tokenizer_hash']}) |")
        if kind == "llm":
            lines.append(f"| shape | hidden {spec.get('hidden')}, layers {spec.get('layers')}, heads "
                         f"{spec.get('heads')} (kv {spec.get('kv_heads')}), context trained {spec.get('seq_len')}"
                         + (f", sliding window {spec['sliding_window']}" if spec.get("sliding_window") else "") + " |")
            lines.append("| objective | next-token prediction on every text sample (turns joined by newlines) |")
        else:
            lines.append(f"| shape | {spec.get('image_size')} px / patch {spec.get('patch_size')} = "
                         f"{info.get('num_patches')} patches, hidden {spec.get('hidden')}, layers {spec.get('layers')} |")
            if spec.get("self_distill"):
                sd = spec["self_distill"]
                lines.append(f"| objective | DINO-style self-distillation on the captions_short images, no text: "
                             f"an EMA teacher, DINO loss across two augmented crops, iBOT loss on masked patches, "
                             f"KoLeo, {sd['prototypes']} prototypes; the teacher's backbone is saved |")
                if "prototypes_used" in info:
                    lines.append(f"| collapse check | the teacher's CLS picked {info['prototypes_used']} distinct "
                                 f"prototypes per batch of {2 * spec.get('batch', 0)} views at the end |")
            else:
                loss = "CLIP contrastive (softmax)" if info.get("family") == "clip" else "SigLIP sigmoid"
                lines.append(f"| objective | {loss} loss on captions_short image-caption pairs |")
            if info.get("centred_layer") is not None:
                lines.append(f"| features | hidden_states[{info['centred_layer']}] centred over the world's images "
                             f"(a mean of norm {info['removed_offset_norm']:.2f} folded into an fc2 bias) |")
    hashed = "spec, world and tokenizer" if kind != "vision" or info.get("tokenizer_hash") else "spec and world"
    lines += ["", f"Cache key: `{info['key']}` (hash of the builder's {hashed}).", ""]
    return "\n".join(lines)
