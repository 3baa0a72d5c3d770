"""A stage's output: a directory with weights per component and a manifest that says so.

    manifest.json   what the directory holds (written last: its presence means "complete")
    config.yaml     the resolved variant config
    vision.safetensors / connector.safetensors / llm.safetensors   components not at their pretrained init
    llm_lora/ (or vision_lora/)   peft adapters, kept unmerged
    skipped.json    samples the stage could not use, by reason, with ids

The next stage reads the manifest to know what to load — never path names. A component
whose weights the manifest doesn't list is loaded from its pretrained checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file, save_file

from vlmsweep import storage
from vlmsweep.models.tuning import component_module
from vlmsweep.models.vlm import VLM

FORMAT = "vlmsweep.stage/1"
MANIFEST = "manifest.json"


def save_weights(module, path: Path) -> None:
    """Every state-dict entry as its own contiguous tensor.

    DeepSpeed keeps parameters as views into flat buffers and tied weights share storage;
    safetensors refuses both, so each tensor is copied out (tied ones are stored twice,
    which keeps loading a plain strict load_state_dict).
    """
    save_file({k: v.detach().to("cpu").clone().contiguous() for k, v in module.state_dict().items()}, str(path))


def read_manifest(stage_dir: str | Path) -> dict:
    path = storage.join(str(stage_dir), MANIFEST)
    try:
        manifest = json.loads(storage.read_text(path))
    except (FileNotFoundError, IsADirectoryError):
        raise FileNotFoundError(f"{stage_dir} is not a finished stage output (no {MANIFEST})") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def read_config(stage_dir: str | Path):
    """The resolved variant config a stage output was trained with (as its manifest names it)."""
    import yaml

    from vlmsweep.config.schema import VariantConfig

    manifest = read_manifest(stage_dir)
    return VariantConfig.model_validate(yaml.safe_load(storage.read_text(storage.join(str(stage_dir), manifest["config"]))))


def is_complete(stage_dir: str | Path) -> bool:
    return storage.is_file(storage.join(str(stage_dir), MANIFEST))


def local_stage(stage_dir: str | Path) -> Path:
    """The stage output on this node's disk: in place when local, else a cached copy keyed by the
    output's location and creation time (a stage output is never changed once its manifest exists)."""
    return storage.local_copy(str(stage_dir), f"stages/{storage.name(str(stage_dir))}@{read_manifest(stage_dir)['created']}")


def load_into(vlm: VLM, stage_dir: str | Path, merge_lora: bool = True) -> dict:
    """Load a finished stage's weights into a freshly built VLM; returns the manifest.

    LoRA adapters are merged when the model goes on training (merge_lora=True); for
    serving they can stay separate, as BakLLaVA serves them.
    """
    from peft import PeftModel

    manifest = read_manifest(stage_dir)
    stage_dir = local_stage(stage_dir)
    for component, entry in manifest["components"].items():
        if entry.get("weights"):
            component_module(vlm, component).load_state_dict(load_file(str(stage_dir / entry["weights"])), strict=True)
        if entry.get("lora"):
            if component == "llm":
                vlm.llm = PeftModel.from_pretrained(vlm.llm, str(stage_dir / entry["lora"]))
                if merge_lora:
                    vlm.llm = vlm.llm.merge_and_unload()
            else:
                vlm.vision.model = PeftModel.from_pretrained(vlm.vision.model, str(stage_dir / entry["lora"]))
                if merge_lora:
                    vlm.vision.model = vlm.vision.model.merge_and_unload()
    return manifest


def save_stage(vlm: VLM, out_dir: str | Path, *, stage: str, modes: dict[str, str], init_dir: str | None,
               config_yaml: str, summary: dict, files: dict[str, str] | None = None) -> dict:
    """Write the stage output (rank 0 only, with full parameters in hand); `files`: extra text
    files by name (skipped.json). The manifest is written last, so its presence means complete:
    a remote output is assembled on local disk, then uploaded with the manifest after the rest."""
    out_dir = str(out_dir)
    remote = storage.is_remote(out_dir)
    if remote:
        (storage.cache_root() / "staging").mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix=f"{storage.name(out_dir)}-", dir=storage.cache_root() / "staging"))
    else:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
    try:
        manifest = _write_stage(vlm, out, stage=stage, modes=modes, init_dir=init_dir, config_yaml=config_yaml,
                                summary=summary, files=files or {})
        if remote:
            storage.upload_dir(out, out_dir, last=MANIFEST)
    finally:
        if remote:
            shutil.rmtree(out, ignore_errors=True)
    return manifest


def _write_stage(vlm: VLM, out: Path, *, stage, modes, init_dir, config_yaml, summary, files) -> dict:
    init = read_manifest(init_dir) if init_dir else {"components": {}}
    init_local = local_stage(init_dir) if init_dir else None
    components = {}
    for component, mode in modes.items():
        before = init["components"].get(component, {})
        entry = {"mode": mode, "trained_in": list(before.get("trained_in", [])) + ([stage] if mode != "frozen" else []),
                 "weights": None, "lora": None}
        if mode in ("full", "partial") or (before.get("weights") and mode == "frozen"):
            entry["weights"] = f"{component}.safetensors"
            save_weights(component_module(vlm, component), out / entry["weights"])
        elif mode in ("lora", "qlora"):
            if before.get("weights"):  # the base under the adapter came from an earlier stage
                entry["weights"] = f"{component}.safetensors"
                shutil.copyfile(init_local / before["weights"], out / entry["weights"])
            entry["lora"] = f"{component}_lora"
            module = vlm.llm if component == "llm" else vlm.vision.model
            module.save_pretrained(str(out / entry["lora"]))
        components[component] = entry
    (out / "config.yaml").write_text(config_yaml)
    for name, text in files.items():
        (out / name).write_text(text)
    manifest = {"format": FORMAT, "stage": stage, "init": str(init_dir) if init_dir else None,
                "components": components, "config": "config.yaml", "created": time.time(), **summary}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / MANIFEST)  # atomic: the manifest appears only when everything is written
    return manifest
