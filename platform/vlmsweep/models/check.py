"""Pre-flight checks of a variant against the registries and the real model shapes.

Runs before Ray starts: reads only configs (no weights), collects every problem, and
raises one ConfigError naming each field with the allowed values.
"""

from __future__ import annotations

from pathlib import Path

from vlmsweep.config.errors import ConfigError, UnknownNameError
from vlmsweep.config.schema import VariantConfig

from .connectors import check_connector
from .llm import get_llm_family, llm_config
from .presets import ZooNotBuiltError
from .templates import get_template
from .fused import fused_geometry
from .vision import get_vision_family, vision_geometry


def chat_template(cfg: VariantConfig) -> str:
    """The template of 'chat' stages: the config's choice or the LLM family's default."""
    return cfg.model.llm.template or get_llm_family(cfg.model.llm.family).template


def check_variant(cfg: VariantConfig, preset_root: str | Path, offline_ok: bool = False) -> list[str]:
    """Raise ConfigError with every problem; returns notes on what could not be checked.

    offline_ok (for --dry-run): a model that can't be read here (a Hub name on a machine with
    no network or cache, a zoo:<name> not built yet) becomes a note instead of an error, and
    the checks that need its shapes (depths, connector dimensions) are skipped for it.
    """
    problems: list[tuple[str, str]] = []
    notes: list[str] = []

    def collect(fn, checkpoint: str = "", field: str = ""):
        try:
            return fn()
        except ZooNotBuiltError as err:  # built by `vlmsweep zoo build`, which a dry-run needn't wait for
            if not offline_ok:
                raise
            notes.append(f"{err.problems[0][1]}; its shapes are unverified, stage ids provisional")
        except ConfigError as err:
            # the models layer names `model.vision.<field>`; a fused encoder is `model.vision.<i>.<field>`
            problems.extend((f.replace("model.vision", field, 1) if field else f, m) for f, m in err.problems)
        except OSError:  # transformers' "can't find / can't reach" for configs
            if not offline_ok:
                raise
            notes.append(f"{checkpoint}: not available on this machine, its shapes are unverified")
        return None

    geometries = []
    for field, vision in cfg.model.encoders():
        vfam = collect(lambda: get_vision_family(vision.family), field=field)
        geometries.append(collect(lambda: vision_geometry(vision, preset_root), vision.checkpoint, field) if vfam else None)
        if vfam and vfam.prefix_tokens == 0 and vision.feature_select == "cls_patch":
            problems.append((f"{field}.feature_select", f"family {vision.family!r} has no CLS token; allowed: patch"))
    lfam = collect(lambda: get_llm_family(cfg.model.llm.family))
    if cfg.model.llm.template:
        collect(lambda: get_template(cfg.model.llm.template))
    lconf = collect(lambda: llm_config(cfg.model.llm, preset_root), cfg.model.llm.checkpoint) if lfam else None
    geometry = geometries[0]
    if cfg.model.fused:
        geometry = collect(lambda: fused_geometry(cfg.model.encoders(), preset_root)) if all(geometries) else None
    if geometry and lconf:
        try:
            for msg in check_connector(cfg.model.connector.name, geometry.hidden_size, lconf.hidden_size,
                                       geometry.num_tokens, dict(cfg.model.connector.options)):
                problems.append(("model.connector", msg))
        except UnknownNameError as err:
            problems.append(("model.connector.name", str(err.problems[0][1])))

    depth = {"vision": geometry.depth if geometry else None,
             "llm": int(lconf.num_hidden_layers) if lconf else None}
    for stage in cfg.recipe.stages:
        gpu = stage.training.gpus_per_worker > 0
        for component, tune in stage.components().items():
            field = f"stages.{stage.name}.{component}"
            if tune.mode in ("lora", "qlora") and component == "vision" and cfg.model.fused:
                problems.append((f"{field}.mode", "LoRA wraps one model, and fused encoders are several; "
                                                  "allowed for fused encoders: frozen, full, partial"))
            if tune.mode in ("lora", "qlora", "partial") and component == "connector":
                problems.append((f"{field}.mode", f"{tune.mode!r} needs a layered component; "
                                                  "allowed for the connector: frozen, full"))
            if tune.mode == "qlora":
                if not gpu:
                    problems.append((f"{field}.mode", "qlora needs a GPU (training.gpus_per_worker > 0)"))
                if component != "llm":
                    problems.append((f"{field}.mode", "qlora quantizes the LLM only; use lora here"))
                if stage.training.zero_stage == 3:
                    problems.append((f"{field}.mode", "qlora's 4-bit weights can't be partitioned by ZeRO-3"))
            if tune.mode == "partial" and depth.get(component) is not None and tune.from_layer >= depth[component]:
                problems.append((f"{field}.from_layer",
                                 f"{tune.from_layer} is past the {component}'s depth: layers 0..{depth[component] - 1} "
                                 f"run{' up to the feature layer' if component == 'vision' else ''}"))
        if all(t.mode == "frozen" for t in stage.components().values()):
            problems.append((f"stages.{stage.name}", "nothing trains: every component is frozen"))
    if problems:
        raise ConfigError(problems)
    return notes
