"""A stage's output: a directory with weights per component and a manifest that says so.

    manifest.json   what the directory holds (written last: its presence means "complete")
    config.yaml     the resolved variant config
    vision.safetensors / connector.safetensors / llm.safetensors   components not at their pretrained init
    llm_lora/ (or vision_lora/)   peft adapters, kept unmerged
    skipped.json    samples the stage could not use, by reason, with ids

The next stage reads the manifest to know what to load — never path names. A component
whose weights the manifest doesn't list is loaded from its pretrained checkpoint.

LoRA across stages. A stage starts from its init stage with every adapter merged into its
base (worker.build_stage_model: load_into(merge_lora=True)), so a component's entry is:
  frozen after lora    the init's entry carried over unchanged (base weights file if any, and
                       the adapter): nothing changed, and serving can still keep it separate
  full/partial after   the full weights: the adapter was merged before training, so they hold it
  lora after lora      (same or new options) the base under the new adapter is the old base with
                       the old adapter merged in: saved as the weights, the new adapter beside it
  lora after anything  the init's weights file (if any) copied as the base, and the adapter
  else
Loading (merged or not) therefore always rebuilds the model the stage trained.
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
    files by name (skipped.json).

    Never half-written: everything is written under a temporary name first, then committed,
    the manifest (whose presence means complete) last. A local output is assembled in a
    sibling folder and moved in by renames; a remote one is assembled on local disk and
    uploaded. A write that fails (a full disk) leaves no file under an output's final name."""
    out_dir = str(out_dir)
    remote = storage.is_remote(out_dir)
    staging = storage.cache_root() / "staging" if remote else Path(out_dir).parent
    staging.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f".{storage.name(out_dir)}.partial-", dir=staging))
    try:
        manifest = _write_stage(vlm, out, stage=stage, modes=modes, init_dir=init_dir, config_yaml=config_yaml,
                                summary=summary, files=files or {})
        if remote:
            storage.upload_dir(out, out_dir, last=MANIFEST)
        else:
            _commit_local(out, Path(out_dir))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return manifest


def _commit_local(assembled: Path, out_dir: Path) -> None:
    """Move an assembled output into place (same filesystem: renames, no copies), the manifest
    last. `out_dir` may already hold files of an attempt that never finished (no manifest):
    they are replaced."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in sorted(assembled.iterdir(), key=lambda p: p.name == MANIFEST):
        target = out_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)


def _base_weights(peft_model) -> dict:
    """The weights under a peft wrapper's adapters, keyed as the bare model's state dict
    (`q_proj.base_layer.weight` -> `q_proj.weight`; the adapters' own tensors left out)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = peft_model.get_base_model()
    tuned = [name for name, m in base.named_modules() if isinstance(m, BaseTunerLayer)]
    out = {}
    for key, value in base.state_dict().items():
        layer = next((t for t in tuned if key.startswith(t + ".")), None)
        if layer is not None:
            rest = key[len(layer) + 1:]
            if not rest.startswith("base_layer."):
                continue  # lora_A / lora_B / ...: the adapter's, saved with save_pretrained
            key = f"{layer}.{rest[len('base_layer.'):]}"
        out[key] = value.detach().to("cpu").clone().contiguous()
    return out


def _write_stage(vlm: VLM, out: Path, *, stage, modes, init_dir, config_yaml, summary, files) -> dict:
    """One entry per component, by the LoRA rule in the module docstring."""
    init = read_manifest(init_dir) if init_dir else {"components": {}}
    init_local = local_stage(init_dir) if init_dir else None
    components = {}
    for component, mode in modes.items():
        before = init["components"].get(component, {})
        entry = {"mode": mode, "trained_in": list(before.get("trained_in", [])) + ([stage] if mode != "frozen" else []),
                 "weights": None, "lora": None}
        if mode == "frozen":
            # unchanged: the init's files as they are (in memory its adapter is merged; on
            # disk it stays an adapter, so a server may still keep it separate)
            if before.get("weights"):
                entry["weights"] = f"{component}.safetensors"
                shutil.copyfile(init_local / before["weights"], out / entry["weights"])
            if before.get("lora"):
                entry["lora"] = f"{component}_lora"
                shutil.copytree(init_local / before["lora"], out / entry["lora"])
        elif mode in ("full", "partial"):
            entry["weights"] = f"{component}.safetensors"
            save_weights(component_module(vlm, component), out / entry["weights"])
        elif mode in ("lora", "qlora"):
            module = vlm.llm if component == "llm" else vlm.vision.model
            if before.get("lora"):  # the earlier adapter was merged into the base under this one
                entry["weights"] = f"{component}.safetensors"
                save_file(_base_weights(module), str(out / entry["weights"]))
            elif before.get("weights"):  # the base under the adapter came from an earlier stage
                entry["weights"] = f"{component}.safetensors"
                shutil.copyfile(init_local / before["weights"], out / entry["weights"])
            entry["lora"] = f"{component}_lora"
            module.save_pretrained(str(out / entry["lora"]))
        components[component] = entry
    (out / "config.yaml").write_text(config_yaml)
    for name, text in files.items():
        (out / name).write_text(text)
    manifest = {"format": FORMAT, "stage": stage, "init": str(init_dir) if init_dir else None,
                "components": components, "config": "config.yaml", "created": time.time(), **summary}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))   # committed last (save_stage)
    return manifest
