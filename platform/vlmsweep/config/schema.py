"""The variant config: what a YAML file says, validated by pydantic v2.

Every model forbids unknown keys, so a typo is an error naming the field. Names of
components (vision family, LLM family, connector, template) are plain strings here and
are checked against the exact-name registries by `vlmsweep.models.check` — config sits
below models in the layering, so it cannot import the registries itself.
"""

from __future__ import annotations

import math
import typing
from typing import Annotated, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo,
                      field_validator, model_validator)

TuneMode = Literal["frozen", "full", "partial", "lora", "qlora"]
NAME_MAX = 100  # variant, sweep and stage names: run names, directory names, URI parts


def name_problem(name: str) -> str | None:
    """Why `name` can't be a variant, sweep or stage name, or None. Names become directories
    (stages/<stage>-<id>, reports/<sweep>), URI parts, MLflow run names and search filters."""
    if not name:
        return "'' is empty"
    if len(name) > NAME_MAX:
        return f"{name[:20]!r}... is {len(name)} characters long; at most {NAME_MAX}"
    if not name.isprintable():
        return f"{name!r} has a non-printable character"
    if "/" in name or "\\" in name:
        return f"{name!r} contains a path separator"
    if ".." in name or name.startswith("."):
        return f"{name!r} contains '..' or starts with '.' (it would be a relative or hidden path)"
    if any(q in name for q in "'\"`"):
        return f"{name!r} contains a quote (MLflow search filters quote names)"
    return None


def _valid_name(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


SafeName = Annotated[str, AfterValidator(_valid_name)]


class FieldProblem(ValueError):
    """A model-level check that one field is to blame for: errors name that field, not the block."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _accepts_bool(annotation) -> bool:
    return annotation is bool or any(_accepts_bool(a) for a in typing.get_args(annotation))


class Strict(BaseModel):
    # finite numbers only: YAML reads .inf and .nan as floats, pydantic would pass them on
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value, info: ValidationInfo):
        # YAML reads yes/no/on/off/true as booleans, and pydantic would take them as 1 and 0
        if isinstance(value, bool) and not _accepts_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"Input should not be a boolean (got {str(value).lower()})")
        return value


class VisionConfig(Strict):
    family: str = "siglip"
    # a Hub name, a local save_pretrained directory, or "tiny" for the family's tiny preset
    checkpoint: str = "tiny"
    # hidden_states index the features are taken from; LLaVA uses the penultimate layer
    feature_layer: int = -2
    # "patch": patch tokens only (LLaVA); "cls_patch": the CLS token too, where the family has one
    feature_select: Literal["patch", "cls_patch"] = "patch"
    # LLaVA-1.5's "pad": pad the image to a square with the processor's mean colour before resizing
    image_aspect: Literal["pad", "resize"] = "pad"
    # Pixels per side to feed instead of the processor's own size, for encoders that interpolate
    # their position embeddings (DINOv2): Prismatic feeds DINOv2 384 px beside SigLIP-384.
    image_size: int | None = Field(None, gt=0)
    trust_remote_code: bool = False


class LLMConfig(Strict):
    family: str = "llama"
    checkpoint: str = "tiny"
    # chat template for instruction stages; None = the family's default
    template: str | None = None
    trust_remote_code: bool = False
    # DeepSpeed-VisualChat's image delimiters: each image's positions between two special
    # tokens added to the vocabulary, <im_start> and <im_end> (models/llm.py)
    image_delimiters: bool = False


class ConnectorConfig(Strict):
    name: str = "mlp2x_gelu"
    options: dict[str, int | float | str | bool] = Field(default_factory=dict)

    @field_validator("options", mode="before")
    @classmethod
    def _finite(cls, options):
        # one message for the option, not one per member of the value's union type
        for key, value in (options.items() if isinstance(options, dict) else ()):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"option {key!r} must be a finite number, got {value}")
        return options


# A list is fused encoders, anything else one encoder: errors then name only the branch the
# value took (a plain union reports both, e.g. "Input should be a valid list" for a mapping).
VisionChoice = Annotated[
    Annotated[VisionConfig, Tag("one")] | Annotated[list[VisionConfig], Tag("fused")],
    Discriminator(lambda value: "fused" if isinstance(value, list) else "one")]


class ModelConfig(Strict):
    # One encoder, or a list of encoders fused as Prismatic fuses DINOv2 + SigLIP: each runs on
    # the image through its own processor, and their features are concatenated per patch
    # (models/vision.py: FusedVisionTower).
    vision: VisionChoice = Field(default_factory=VisionConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    connector: ConnectorConfig = Field(default_factory=ConnectorConfig)

    @field_validator("vision")
    @classmethod
    def _fused_needs_two(cls, vision):
        if isinstance(vision, list) and len(vision) < 2:
            raise ValueError("a list fuses encoders: give at least two, or a single mapping for one encoder")
        return vision

    @property
    def fused(self) -> bool:
        return isinstance(self.vision, list)

    def encoders(self) -> list[tuple[str, VisionConfig]]:
        """(field path, config) of each vision encoder: `model.vision`, or `model.vision.<i>` when fused."""
        if isinstance(self.vision, list):
            return [(f"model.vision.{i}", v) for i, v in enumerate(self.vision)]
        return [("model.vision", self.vision)]

    def checkpoints(self) -> list[tuple[str, VisionConfig | LLMConfig]]:
        """(field path, config) of every pretrained part: the encoders, then the LLM."""
        return [*self.encoders(), ("model.llm", self.llm)]


class LoraConfig(Strict):
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    # None = every linear layer inside the component's transformer blocks
    target_modules: list[str] | None = None


class TuneConfig(Strict):
    """How one component (vision, connector or llm) is treated in one stage."""

    mode: TuneMode = "frozen"
    # None = the stage's learning rate
    lr: float | None = Field(None, gt=0)
    # partial mode: layers [from_layer, depth) of the component's block stack train
    from_layer: int | None = Field(None, ge=0)
    lora: LoraConfig | None = None

    @model_validator(mode="after")
    def _options_match_mode(self) -> TuneConfig:
        if self.mode == "partial" and self.from_layer is None:
            raise ValueError("mode 'partial' needs from_layer (the first layer that trains)")
        if self.mode != "partial" and self.from_layer is not None:
            raise ValueError(f"from_layer is only used by mode 'partial', not {self.mode!r}")
        if self.lora is not None and self.mode not in ("lora", "qlora"):
            raise ValueError(f"lora options given but mode is {self.mode!r}; use mode 'lora' or 'qlora'")
        if self.mode in ("lora", "qlora") and self.lora is None:
            self.lora = LoraConfig()
        return self


class TrainingConfig(Strict):
    """Optimisation and scale of one stage. Paper numbers are the recipe defaults."""

    global_batch: int = Field(128, gt=0)
    micro_batch: int = Field(4, gt=0)
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    # exactly one of steps / epochs; epochs are turned into steps from the data's row count
    steps: int | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(2048, gt=8)
    packing: bool = True
    # what happens to a sample longer than max_length (counted either way)
    overlong: Literal["truncate", "drop"] = "truncate"
    max_images_per_sequence: int = Field(16, gt=0)
    # each epoch's rows pass through a shuffle buffer seeded by (seed, rank, epoch): the seed
    # varies the data order too (data/order.py); 0 or 1 keeps the order as read
    shuffle_buffer: int = Field(512, ge=0)
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    workers: int = Field(1, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    log_every: int = Field(1, gt=0)
    checkpoint_every: int = Field(50, gt=0)
    max_failures: int = Field(1, ge=0)
    # debug hook for fault tests, once per stage output: at this step the last rank exits hard
    # ("exit"), or the disk is full while the checkpoint is written ("enospc_checkpoint");
    # "enospc_output": the disk is full while the finished stage's output is written
    fail_at_step: int | None = None
    fail_with: Literal["exit", "enospc_checkpoint", "enospc_output"] = "exit"

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of steps or epochs")
        per_step = self.micro_batch * self.workers
        if self.global_batch % per_step:
            raise ValueError(
                f"global_batch {self.global_batch} is not a multiple of micro_batch × workers "
                f"= {self.micro_batch} × {self.workers} = {per_step}")
        if self.precision != "fp32" and self.gpus_per_worker == 0:
            raise FieldProblem("precision", f"precision {self.precision!r} needs a GPU (gpus_per_worker > 0); "
                                            "use fp32 on CPU")
        return self

    @property
    def grad_accum(self) -> int:
        return self.global_batch // (self.micro_batch * self.workers)


class StageConfig(Strict):
    """One training stage: which data, which template, what trains and how."""

    name: SafeName
    # the data split the stage reads (a key of data.splits)
    split: str
    # "plain" is LLaVA's caption-pretraining format; "chat" = the LLM's chat template
    template: Literal["plain", "chat"] = "chat"
    vision: TuneConfig = Field(default_factory=TuneConfig)
    connector: TuneConfig = Field(default_factory=TuneConfig)
    llm: TuneConfig = Field(default_factory=TuneConfig)
    training: TrainingConfig

    def components(self) -> dict[str, TuneConfig]:
        return {"vision": self.vision, "connector": self.connector, "llm": self.llm}


class RecipeConfig(Strict):
    name: str
    stages: list[StageConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_stage_names(self) -> RecipeConfig:
        names = [s.name for s in self.stages]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"stage names must be unique; repeated: {sorted(dup)}")
        return self


class SyntheticDataConfig(Strict):
    size: Literal["tiny", "small", "medium"] = "tiny"
    seed: int = 0
    image_size: int = Field(64, ge=32, le=768)
    # the instruct split's kinds and their weights, e.g. {vqa: 1, yes_no: 1}: a world of its own,
    # the same size. None = LLaVA-665K's spread (data/world/build.py MIX names the kinds; it checks them)
    mix: dict[str, float] | None = None


class DataConfig(Strict):
    # a short label used in variant names and MLflow params
    name: str = "world"
    # "synthetic": vlmsweep generates the world; "shards": splits point at shard dirs
    source: Literal["synthetic", "shards"] = "synthetic"
    synthetic: SyntheticDataConfig = Field(default_factory=SyntheticDataConfig)
    # split name -> shard directory. For the synthetic world the defaults name its splits.
    splits: dict[str, str] = Field(default_factory=lambda: {
        "captions": "captions_short", "instruct": "instruct"})
    # the share of text-only rows in each training split that has both kinds (DeepSpeed-
    # VisualChat's text-only mix), reached by thinning the larger kind; None = as the split is
    # (data/mix.py)
    text_only_ratio: float | None = Field(None, ge=0, le=1)


class JudgeConfig(Strict):
    """An OpenAI-compatible chat endpoint that grades open answers (MM-Vet)."""

    base_url: str
    model: str = "gpt-4-0613"  # MM-Vet's published numbers use this judge
    api_key_env: str = "OPENAI_API_KEY"


class EvalConfig(Strict):
    """The evaluation stage: which benchmarks, on which files (names are checked by eval/)."""

    benchmarks: list[str] = Field(default_factory=list)  # empty: no evaluation stage
    # a directory with one folder per benchmark; None = the synthetic world's benchmark sets
    data: str | None = None
    batch_size: int = Field(16, gt=0)
    max_new_tokens: int = Field(32, gt=0)
    judge: JudgeConfig | None = None


class VariantConfig(Strict):
    """Everything that determines one trained variant (the resolved form has no gaps)."""

    name: SafeName = "variant"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    recipe: RecipeConfig
    eval: EvalConfig = Field(default_factory=EvalConfig)
    seed: int = 0

    @model_validator(mode="after")
    def _splits_exist(self) -> VariantConfig:
        for i, stage in enumerate(self.recipe.stages):
            if stage.split not in self.data.splits:
                raise ValueError(
                    f"recipe.stages.{i}.split: {stage.split!r} is not a data split; "
                    f"allowed: {', '.join(sorted(self.data.splits))}")
        return self
