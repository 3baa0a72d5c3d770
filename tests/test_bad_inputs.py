"""Every bad input gets a clean error: a corpus of mistakes, each run through the real CLI.

Each case writes its files, runs `vlmsweep.cli.main` in-process and expects exit code 2, no
traceback, and the message's key parts on stderr: the field, the file:line the user wrote,
or the id and the reason. All of them fail before Ray starts (Ray is stubbed out to prove
it), so the whole corpus takes seconds. A bug, by contrast, keeps its traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vlmsweep.cli import main

# ---- the corpus -----------------------------------------------------------------------------

# a valid variant every case starts from: tiny parts, 2 steps, short sequences
T = "training: {steps: 2, global_batch: 8, micro_batch: 2, max_length: 256}\n"
OK = "name: ok\nrecipe: base\n" + T
GRID = "name: g\nvariant:\n  recipe: base\n  " + T + "naming: '{connector}'\naxes:\n"


@dataclass
class Case:
    id: str
    argv: list[str]        # {d}: the case's folder, {work}: the shared work dir
    expect: list[str]      # substrings of stderr; "@FILE:NEEDLE" = FILE's path:the line holding NEEDLE
    files: dict = field(default_factory=dict)   # name → text (or bytes)
    env: dict = field(default_factory=dict)
    gpu_free: bool = False  # only meaningful on a machine without a GPU


def _sets(sets) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def check(id, text, *expect, sets=(), files=None) -> Case:
    """`vlmsweep check` of a variant file v.yaml."""
    return Case(id, ["check", "{d}/v.yaml", "--work-dir", "{work}", *_sets(sets)], list(expect),
                {"v.yaml": text, **(files or {})})


def sweep(id, text, *expect, sets=(), extra=(), files=None) -> Case:
    """`vlmsweep sweep --dry-run` of a grid file g.yaml."""
    return Case(id, ["sweep", "{d}/g.yaml", "--dry-run", "--work-dir", "{work}", *_sets(sets), *extra],
                list(expect), {"g.yaml": text, **(files or {})})


def run(id, text, *expect, gpu_free=False) -> Case:
    """`vlmsweep run` (a local cluster): what can't fit is refused before Ray starts."""
    return Case(id, ["run", "{d}/v.yaml", "--work-dir", "{work}"], list(expect), {"v.yaml": text},
                gpu_free=gpu_free)


def cli(id, argv, *expect, files=None, env=None) -> Case:
    return Case(id, list(argv), list(expect), files or {}, env or {})


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n" for a, b in zip("abcdefgh", "bcdefghi")) + "seed: *i\n"

FLOW_LAUGHS = "{a: &a [x, x, x, x, x, x, x, x, x, x], " + ", ".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 10)}]" for a, b in zip("abcdefgh", "bcdefghi")) + "}"

VQA_ANSWERS = '{"question_id": 1, "text": "two"}\n'
VQA_ANNOTATIONS = '{"annotations": [{"question_id": 1, "answers": [{"answer": "two"}]}]}\n'
GQA_ANNOTATIONS = '{"1": {"answer": "two", "question": "how many?"}}\n'


def score(id, bench, answers, annotations, *expect, names=("a.jsonl", "ann.json")) -> Case:
    files = {n: t for n, t in zip(names, (answers, annotations)) if t is not None}
    return cli(id, ["eval", "score", "--bench", bench, "--answers", f"{{d}}/{names[0]}",
                    "--annotations", f"{{d}}/{names[1]}"], *expect, files=files)


CORPUS = [
    # -- the file itself
    cli("missing-config", ["check", "{d}/absent.yaml"], "absent.yaml", "no such config file"),
    cli("config-is-a-directory", ["check", "{d}"], "is a directory"),
    check("yaml-syntax-error", "name: x\nmodel:\n  vision: {family: clip\nseed: 0\n", "@v.yaml:seed: 0", "yaml"),
    check("yaml-tab-indent", "name: x\n\tseed: 1\n", "@v.yaml:\tseed", "yaml"),
    check("empty-file", "", "v.yaml", "empty"),
    check("comments-only", "# nothing yet\n", "v.yaml", "empty"),
    check("top-level-list", "- a\n- b\n", "must be a mapping"),
    check("top-level-scalar", "hello\n", "must be a mapping"),
    Case("not-utf8", ["check", "{d}/v.yaml", "--work-dir", "{work}"], ["v.yaml", "UTF-8"],
         {"v.yaml": b"name: \xff\xfe\n"}),
    check("python-tag", "seed: !!python/object/apply:os.system ['true']\n", "@v.yaml:seed:", "python/object"),
    check("duplicate-key", OK + "seed: 1\nseed: 2\n", "seed", "duplicate", "@v.yaml:seed: 1", "@v.yaml:seed: 2"),
    check("duplicate-nested-key", "recipe: base\ntraining:\n  steps: 2\n  steps: 3\n  global_batch: 8\n",
          "training.steps", "@v.yaml:steps: 2", "@v.yaml:steps: 3"),
    check("deep-nesting", "seed: " + "[" * 40 + "]" * 40 + "\n", "@v.yaml:seed", "nested deeper than 32"),
    check("very-deep-nesting", "seed: " + "[" * 50000 + "]" * 50000 + "\n", "@v.yaml:seed", "nest"),
    check("billion-laughs", BILLION_LAUGHS, "v.yaml", "aliases"),
    # -- base: chains
    cli("base-cycle", ["check", "{d}/a.yaml", "--work-dir", "{work}"], "a.yaml → b.yaml → a.yaml", "@b.yaml:base:",
        files={"a.yaml": "base: b.yaml\n" + OK, "b.yaml": "base: a.yaml\nseed: 1\n"}),
    check("base-self", "base: v.yaml\n" + OK, "v.yaml → v.yaml", "base"),
    check("mix-unknown-kind", OK + "data: {synthetic: {mix: {yesno: 1}}}\n", "data.synthetic.mix.yesno",
          "did you mean yes_no", "@v.yaml:yesno"),
    check("mix-negative-weight", OK + "data:\n  synthetic:\n    mix: {vqa: 1, ocr: -1}\n", "data.synthetic.mix.ocr",
          ">= 0", "@v.yaml:ocr"),
    check("mix-all-zero", OK + "data:\n  synthetic:\n    mix: {vqa: 0}\n", "data.synthetic.mix", "empty", "@v.yaml:mix"),
    cli("base-cycle-three-files", ["check", "{d}/a.yaml", "--work-dir", "{work}"],
        "a.yaml → sub/b.yaml → c.yaml → a.yaml",
        files={"a.yaml": "base: sub/b.yaml\n" + OK, "sub/b.yaml": "base: ../c.yaml\n", "c.yaml": "base: a.yaml\n"}),
    check("base-not-a-string", "base: 3\n" + OK, "base", "file path", "@v.yaml:base:"),
    check("base-a-list", "base: [a.yaml, b.yaml]\n" + OK, "base", "file path", "@v.yaml:base:"),
    check("base-missing", "base: nothere.yaml\n" + OK, "base", "nothere.yaml", "@v.yaml:base:"),
    # -- numbers: finite, and no booleans
    check("lr-inf", OK + "stages: {finetune: {training: {lr: .inf}}}\n", "stages.finetune.training.lr", "finite",
          "@v.yaml:lr: .inf"),
    check("lr-nan", "recipe: base\ntraining: {steps: 2, global_batch: 8, micro_batch: 2, lr: .nan}\n",
          "training.lr", "finite", "@v.yaml:lr: .nan"),
    check("lr-minus-inf", "recipe: single_stage\ntraining:\n  steps: 2\n  lr: -.inf\n", "training.lr", "@v.yaml:lr:"),
    check("warmup-nan", "recipe: single_stage\ntraining:\n  steps: 2\n  warmup_ratio: .NaN\n",
          "training.warmup_ratio", "finite"),
    check("steps-true", "recipe: single_stage\ntraining:\n  steps: true\n", "training.steps", "boolean",
          "@v.yaml:steps:"),
    check("lr-no", "recipe: single_stage\ntraining:\n  steps: 2\n  lr: no\n", "training.lr", "boolean"),
    check("seed-yes", OK + "seed: yes\n", "seed", "boolean", "@v.yaml:seed:"),
    check("zero-stage-true", "recipe: single_stage\ntraining:\n  steps: 2\n  zero_stage: true\n",
          "training.zero_stage", "boolean"),
    check("connector-option-inf", OK + "model:\n  connector: {name: resampler, options: {num_queries: .inf}}\n",
          "model.connector.options", "finite"),
    check("seed-fraction", OK + "seed: 1.5\n", "seed", "integer", "@v.yaml:seed:"),
    # -- names from registries: file:line and the nearest valid name
    check("vision-family-typo", OK + "model:\n  vision: {family: siglp}\n", "model.vision.family",
          "did you mean siglip", "@v.yaml:family: siglp"),
    check("llm-family-typo", OK + "model:\n  llm:\n    family: lama\n", "model.llm.family", "did you mean llama",
          "@v.yaml:family: lama"),
    check("connector-typo", OK + "model:\n  connector:\n    name: mlp2x_gelo\n", "model.connector.name",
          "did you mean mlp2x_gelu", "@v.yaml:name: mlp2x_gelo"),
    check("template-typo", OK + "model:\n  llm: {template: vicunna}\n", "model.llm.template", "did you mean vicuna",
          "@v.yaml:template"),
    check("recipe-typo", "recipe: bse\n" + T, "recipe", "did you mean base", "@v.yaml:recipe:"),
    check("benchmark-typo", OK + "eval:\n  benchmarks: [vqav2, gqaa]\n", "eval.benchmarks.1", "did you mean gqa",
          "@v.yaml:benchmarks"),
    check("tune-mode-typo", OK + "stages:\n  finetune:\n    llm: {mode: lorra}\n", "stages.finetune.llm.mode",
          "did you mean lora?", "@v.yaml:mode: lorra"),
    check("feature-select-typo", OK + "model:\n  vision: {feature_select: pach}\n", "model.vision.feature_select",
          "did you mean patch?"),
    check("top-level-field-typo", OK + "trainig: {steps: 3}\n", "trainig", "did you mean training",
          "@v.yaml:trainig"),
    check("nested-field-typo", OK + "model:\n  vision: {famliy: clip}\n", "model.vision.famliy", "did you mean family",
          "@v.yaml:famliy"),
    check("zoo-not-built", OK + "model:\n  llm: {checkpoint: 'zoo:tinyllama'}\n", "model.llm.checkpoint",
          "zoo build", "@v.yaml:checkpoint"),
    # -- tuning, depth, QLoRA, bf16: file:line of what the user wrote, once
    check("qlora-without-gpu", OK + "stages:\n  finetune:\n    llm:\n      mode: qlora\n",
          "stages.finetune.llm.mode", "qlora needs a GPU", "@v.yaml:mode: qlora"),
    check("qlora-on-vision", OK + "stages:\n  finetune:\n    vision: {mode: qlora}\n", "stages.finetune.vision.mode",
          "quantizes the LLM only", "@v.yaml:vision: {mode"),
    check("partial-past-depth-from-recipe", "recipe: share\n" + T, "stages.share_pretrain.vision.from_layer",
          "past the vision's depth", "@v.yaml:recipe: share"),
    check("partial-past-depth-written", OK + "stages:\n  finetune:\n    llm:\n      mode: partial\n"
          "      from_layer: 5\n", "stages.finetune.llm.from_layer", "past the llm's depth", "@v.yaml:from_layer"),
    check("lora-on-connector", OK + "stages:\n  finetune:\n    connector: {mode: lora}\n",
          "stages.finetune.connector.mode", "allowed for the connector", "@v.yaml:connector: {mode"),
    check("bf16-on-cpu", "recipe: base\ntraining:\n  steps: 2\n  precision: bf16\n", "training.precision",
          "needs a GPU", "@v.yaml:precision"),
    check("feature-layer-outside", OK + "model:\n  vision:\n    feature_layer: 9\n", "model.vision.feature_layer",
          "outside an encoder", "@v.yaml:feature_layer"),
    check("max-length-past-positions", "recipe: base\ntraining:\n  steps: 2\n  max_length: 8192\n",
          "training.max_length", "4096", "@v.yaml:max_length"),
    check("stage-max-length-past-positions", OK + "stages:\n  finetune:\n    training: {max_length: 5000}\n",
          "stages.finetune.training.max_length", "4096", "@v.yaml:max_length: 5000"),
    # -- checkpoints that look like paths but aren't there
    check("checkpoint-relative-missing", OK + "model:\n  llm: {checkpoint: ./nope}\n", "model.llm.checkpoint",
          "./nope", "@v.yaml:checkpoint"),
    check("checkpoint-absolute-missing", OK + "model:\n  vision:\n    checkpoint: /nonexistent/siglip\n",
          "model.vision.checkpoint", "/nonexistent/siglip", "@v.yaml:checkpoint"),
    check("checkpoint-home-missing", OK + "model:\n  llm: {checkpoint: ~/no-such-checkpoint-here}\n",
          "model.llm.checkpoint", "no-such-checkpoint-here"),
    check("checkpoint-nested-missing", OK + "model:\n  llm: {checkpoint: models/llama/final}\n",
          "model.llm.checkpoint", "models/llama/final"),
    check("hub-model-unavailable", OK + "model:\n  llm: {checkpoint: no-such-org/no-such-model}\n",
          "model.llm.checkpoint", "no-such-org/no-such-model", "@v.yaml:checkpoint"),
    # -- names that become paths, URIs, MLflow filters
    check("name-with-slash", "name: a/b\nrecipe: base\n" + T, "name", "separator", "@v.yaml:name:"),
    check("name-dotdot", "name: '..'\nrecipe: base\n" + T, "name", "'..'"),
    check("name-control-char", 'name: "bad\\aname"\nrecipe: base\n' + T, "name", "printable"),
    check("name-too-long", f"name: {'x' * 300}\nrecipe: base\n" + T, "name", "300 characters"),
    check("name-with-quote", "name: it's\nrecipe: base\n" + T, "name", "quote"),
    check("name-empty", "name: ''\nrecipe: base\n" + T, "name", "empty"),
    check("stage-name-with-slash", "recipe:\n  name: mine\n  stages:\n    - name: a/b\n      split: instruct\n"
          "      llm: {mode: full}\n      training: {steps: 2}\n", "name", "separator"),
    sweep("grid-name-with-slash", GRID.replace("name: g", "name: x/y") + "  connector: [mlp2x_gelu]\n",
          "name", "separator", "@g.yaml:name: x/y"),
    sweep("grid-name-dotdot", GRID.replace("name: g", "name: '..'") + "  connector: [mlp2x_gelu]\n", "name", "'..'"),
    sweep("grid-variant-name-dotdot", GRID + "  connector:\n    - {label: '..', name: mlp2x_gelu}\n",
          "naming", "'..'"),
    cli("report-sweep-traversal", ["report", "../../etc", "--work-dir", "{work}"], "SWEEP", "path separator"),
    cli("report-sweep-dotdot", ["report", "..", "--work-dir", "{work}"], "SWEEP", "'..'"),
    # -- --set
    check("set-not-a-number", OK, "training.steps", "integer", "--set training.steps=abc", sets=["training.steps=abc"]),
    check("set-replaces-a-mapping", OK, "training", "mapping", sets=["training=3"]),
    check("set-through-a-number", OK, "training.steps", "not a mapping", sets=["training.steps.x=1"]),
    check("set-unparsable-value", OK, "--set", "training.steps=[1,", "YAML", sets=["training.steps=[1,"]),
    check("set-without-equals", OK, "--set", "KEY=VALUE", sets=["training.steps"]),
    check("set-empty-key-part", OK, "--set", "empty", sets=["training..steps=1"]),
    check("set-unknown-top-level", OK, "trainig", "did you mean training", "[--set trainig.steps=1]",
          sets=["trainig.steps=1"]),
    check("set-inf", OK, "training.lr", "finite", sets=["training.lr=.inf"]),
    check("set-bool", OK, "training.steps", "boolean", sets=["training.steps=true"]),
    check("set-stages-scalar", OK, "stages", "mapping", sets=["stages=1"]),
    check("set-stage-scalar", OK, "stages.finetune", "mapping", sets=["stages.finetune=1"]),
    check("set-aliases", OK, "--set", "aliases", sets=["seed=" + FLOW_LAUGHS]),
    sweep("grid-set-through-a-number", GRID + "  connector: [mlp2x_gelu]\n", "seed", "not a mapping",
          sets=["seed.x=1"]),
    # -- grids
    sweep("grid-duplicate-key", GRID + "  connector: [mlp2x_gelu]\naxes:\n  seed: [0]\n", "axes", "duplicate"),
    sweep("grid-empty-file", "", "g.yaml", "empty"),
    sweep("grid-base-cycle", "base: a.yaml\naxes:\n  seed: [0, 1]\n", "a.yaml → a.yaml",
          files={"a.yaml": "base: a.yaml\n" + OK}),
    sweep("grid-base-not-a-string", "base: [a.yaml]\naxes:\n  seed: [0, 1]\n", "base", "file path",
          "@g.yaml:base:"),
    sweep("grid-connector-typo-in-axis", GRID + "  connector: [mlp2x_gelu, mlp2x_gelo]\n", "model.connector.name",
          "did you mean mlp2x_gelu", "@g.yaml:mlp2x_gelo"),
    sweep("grid-benchmark-typo", GRID.replace("  recipe: base\n", "  recipe: base\n  eval: {benchmarks: [vqa2]}\n")
          + "  connector: [mlp2x_gelu, linear]\n", "eval.benchmarks.0", "did you mean vqav2", "@g.yaml:vqa2"),
    sweep("grid-max-length-axis", GRID.replace("naming: '{connector}'", "naming: 'v{seed}'")
          + "  training.max_length: [256, 9000]\n", "max_length", "4096", "@g.yaml:9000"),
    sweep("grid-lr-inf-axis", GRID.replace("naming: '{connector}'", "naming: 'v'") + "  training.lr: [.inf]\n",
          "training.lr", "finite", "@g.yaml:.inf"),
    sweep("grid-unknown-variant", GRID + "  connector: [mlp2x_gelu, linear]\n", "variant", "did you mean linear",
          extra=["--variant", "linaer"]),
    # -- resources of a local cluster
    run("workers-beyond-cpus", "recipe: base\ntraining: {steps: 2, global_batch: 128, micro_batch: 2, workers: 64}\n",
        "training.workers", "CPU"),
    run("cpus-per-worker-beyond-cpus", "recipe: base\ntraining: {steps: 2, global_batch: 8, micro_batch: 2, "
        "cpus_per_worker: 512}\n", "cpus_per_worker", "CPU"),
    run("gpus-when-none", "recipe: base\ntraining: {steps: 2, global_batch: 8, micro_batch: 2, gpus_per_worker: 1}\n",
        "gpus_per_worker", "GPU", gpu_free=True),
    # -- the work dir, the tracking store, output paths
    cli("work-dir-is-a-file", ["check", "{d}/v.yaml", "--work-dir", "{d}/afile"], "afile", "is a file",
        files={"v.yaml": OK, "afile": "x"}),
    cli("work-dir-env-is-a-file", ["check", "{d}/v.yaml"], "VLMSWEEP_WORK_DIR", "is a file",
        files={"v.yaml": OK, "afile": "x"}, env={"VLMSWEEP_WORK_DIR": "{d}/afile"}),
    cli("work-dir-under-a-file", ["check", "{d}/v.yaml", "--work-dir", "{d}/afile/w"], "--work-dir", "cannot create",
        files={"v.yaml": OK, "afile": "x"}),
    cli("work-dir-http", ["check", "{d}/v.yaml", "--work-dir", "http://example.com/w"], "--work-dir", "not storage",
        files={"v.yaml": OK}),
    cli("report-unknown-sweep", ["report", "no-such-sweep", "--work-dir", "{d}/w"], "no sweep 'no-such-sweep'"),
    cli("tracking-db-dir-missing", ["report", "s", "--work-dir", "{d}/w"], "MLFLOW_TRACKING_URI", "no-dir",
        env={"MLFLOW_TRACKING_URI": "sqlite:///{d}/no-dir/mlflow.db"}),
    cli("tracking-db-under-a-file", ["report", "s", "--work-dir", "{d}/w"], "MLFLOW_TRACKING_URI", "afile",
        files={"afile": "x"}, env={"MLFLOW_TRACKING_URI": "sqlite:///{d}/afile/mlflow.db"}),
    cli("tracking-db-is-a-directory", ["report", "s", "--work-dir", "{d}/w"], "MLFLOW_TRACKING_URI", "directory",
        files={"db/x": "x"}, env={"MLFLOW_TRACKING_URI": "sqlite:///{d}/db"}),
    cli("tracking-store-is-a-file", ["report", "s", "--work-dir", "{d}/w"], "MLFLOW_TRACKING_URI", "afile",
        files={"afile": "x"}, env={"MLFLOW_TRACKING_URI": "{d}/afile"}),
    cli("tracking-db-not-a-database", ["report", "s", "--work-dir", "{d}/w"], "sqlite:///", "not a database",
        files={"afile": "not a database\n" * 100}, env={"MLFLOW_TRACKING_URI": "sqlite:///{d}/afile"}),
    cli("report-out-is-a-file", ["report", "s", "--out", "{d}/afile", "--work-dir", "{d}/w"], "--out", "is a file",
        files={"afile": "x"}),
    cli("data-world-out-is-a-file", ["data", "world", "--out", "{d}/afile"], "--out", "is a file",
        files={"afile": "x"}),
    cli("data-world-bad-size", ["data", "world", "--out", "{d}/w", "--size", "huge"], "size", "huge"),
    cli("data-world-mix-not-yaml", ["data", "world", "--out", "{d}/w", "--mix", "{yes_no: 1"], "--mix", "not YAML"),
    cli("data-world-mix-a-list", ["data", "world", "--out", "{d}/w", "--mix", "[yes_no]"], "--mix", "must map"),
    cli("data-world-mix-unknown-kind", ["data", "world", "--out", "{d}/w", "--mix", "{yesno: 1}"],
        "data.synthetic.mix.yesno", "did you mean yes_no"),
    cli("data-world-mix-yaml-boolean", ["data", "world", "--out", "{d}/w", "--mix", "{yes: 1}"],
        "data.synthetic.mix.True", "quote it"),
    cli("zoo-bad-size", ["zoo", "build", "--size", "huge", "--work-dir", "{d}/w"], "zoo.size", "huge"),
    # -- eval and eval score
    cli("eval-checkpoint-missing", ["eval", "{d}/no-stage", "--work-dir", "{work}"], "CHECKPOINT", "no-stage"),
    cli("eval-checkpoint-not-a-stage", ["eval", "{d}", "--work-dir", "{work}"], "CHECKPOINT", "stage output"),
    cli("eval-out-is-a-file", ["eval", "{d}", "--out", "{d}/afile", "--work-dir", "{work}"], "--out", "is a file",
        files={"afile": "x"}),
    cli("eval-unknown-bench", ["eval", "{d}", "--bench", "vqav2,gqaa", "--work-dir", "{work}"], "--bench",
        "did you mean gqa"),
    score("score-answers-missing", "vqav2", None, VQA_ANNOTATIONS, "--answers", "no such file"),
    score("score-answers-directory", "vqav2", None, VQA_ANNOTATIONS, "--answers", "directory", names=(".", "ann.json")),
    score("score-answers-malformed", "vqav2", VQA_ANSWERS + "{not json\n", VQA_ANNOTATIONS, "--answers", "a.jsonl:2"),
    score("score-answers-not-llava", "vqav2", '{"id": 1, "answer": "two"}\n', VQA_ANNOTATIONS, "a.jsonl:1",
          "question_id"),
    score("score-annotations-missing", "vqav2", VQA_ANSWERS, None, "--annotations", "no such file"),
    score("score-annotations-malformed", "vqav2", VQA_ANSWERS, '{"annotations": [\n  {"question_id": 1,,}\n]}\n',
          "ann.json:2", "JSON"),
    score("score-annotations-foreign", "vqav2", VQA_ANSWERS, GQA_ANNOTATIONS, "ann.json", "vqav2"),
    score("score-annotations-not-json-at-all", "gqa", VQA_ANSWERS, "question_id,answer\n1,two\n", "ann.json:1"),
    score("score-annotations-foreign-gqa", "gqa", VQA_ANSWERS, VQA_ANNOTATIONS, "ann.json", "gqa"),
    score("score-pope-malformed-jsonl", "pope", VQA_ANSWERS, '{"question_id": 1, "label": "yes"}\nnope\n',
          "ann.jsonl:2", names=("a.jsonl", "ann.jsonl")),
    score("score-pope-foreign", "pope", VQA_ANSWERS, '{"question_id": 1, "answer": "yes"}\n', "ann.jsonl", "label",
          names=("a.jsonl", "ann.jsonl")),
    score("score-mme-foreign", "mme", VQA_ANSWERS, GQA_ANNOTATIONS, "ann.json", "mme"),
    score("score-scienceqa-foreign", "scienceqa", VQA_ANSWERS, GQA_ANNOTATIONS, "ann.json", "scienceqa"),
    score("score-textvqa-foreign", "textvqa", VQA_ANSWERS, GQA_ANNOTATIONS, "ann.json", "textvqa"),
    score("score-mmmu-foreign", "mmmu", VQA_ANSWERS, VQA_ANNOTATIONS, "ann.json", "mmmu"),
    score("score-unknown-bench", "vqa2", VQA_ANSWERS, VQA_ANNOTATIONS, "did you mean vqav2"),
    cli("score-missing-arguments", ["eval", "score", "--bench", "vqav2"], "--answers FILE"),
    # -- numbers on the command line
    cli("max-concurrent-zero", ["sweep", "{d}/g.yaml", "--max-concurrent", "0"], "--max-concurrent", "positive"),
    cli("retries-negative", ["sweep", "{d}/g.yaml", "--retries", "-1"], "--retries"),
    cli("eval-batch-size-zero", ["eval", "{d}", "--batch-size", "0"], "--batch-size", "positive"),
    cli("jobs-without-address", ["jobs", "list"], "--address"),
]


# ---- running one case -----------------------------------------------------------------------

def _fill(text: str, d: Path, work: Path) -> str:
    return text.replace("{d}", str(d)).replace("{work}", str(work))


def _expected(item: str, d: Path, work: Path) -> str:
    """A plain substring, or "@FILE:NEEDLE" → "<d>/FILE:<line of NEEDLE in FILE>"."""
    if not item.startswith("@"):
        return _fill(item, d, work)
    name, needle = item[1:].split(":", 1)
    lines = (d / name).read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if needle in text)
    return f"{d / name}:{line}"


def write_case(case: Case, d: Path) -> None:
    for name, text in case.files.items():
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One work dir for the corpus: the tiny presets are written once."""
    return tmp_path_factory.mktemp("work")


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """A case that got past every check would plan and start Ray: the modules that do are
    replaced by ones that fail the case at once (and are not even imported)."""
    def reached_ray(*args, **kwargs):
        raise AssertionError("got past every check: this input was accepted")

    for name, functions in (("vlmsweep.sweep.runner", ("run_sweep", "check_grid")),
                            ("vlmsweep.sweep.plan", ("make_plan", "describe"))):
        fake = types.ModuleType(name)
        for function in functions:
            setattr(fake, function, reached_ray)
        monkeypatch.setitem(sys.modules, name, fake)
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "VLMSWEEP_WORK_DIR", "VLMSWEEP_JOBS_ADDRESS",
                 "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    # no Hub: every case is local (the constant is read once, when huggingface_hub is imported)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        return stop.code


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_bad_input_is_one_clean_error(case, tmp_path, work, monkeypatch, capsys):
    if case.gpu_free:
        import torch

        if torch.cuda.is_available():
            pytest.skip("needs a machine without a GPU")
    write_case(case, tmp_path)
    for name, value in case.env.items():
        monkeypatch.setenv(name, _fill(value, tmp_path, work))
    code = run_cli([_fill(a, tmp_path, work) for a in case.argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith(("error:", "usage:")), err
    assert len(err.splitlines()) <= 12, err  # one line, or a short block
    for item in case.expect:
        assert _expected(item, tmp_path, work) in err, err


def test_the_corpus_is_large_and_its_ids_unique():
    ids = [c.id for c in CORPUS]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


def test_an_error_is_reported_once(tmp_path, work, capsys):
    """The training block goes into every stage; its mistake is still one line, at its line."""
    path = tmp_path / "v.yaml"
    path.write_text("recipe: base\ntraining:\n  steps: 2\n  zero_stage: 5\n")
    assert run_cli(["check", str(path), "--work-dir", str(work)]) == 2
    err = capsys.readouterr().err
    assert err.count("zero_stage") == 1 and f"{path}:4" in err
    assert "stages pretrain, finetune" in err


# ---- in a real process --------------------------------------------------------------------

def _cli_process(args: list[str], code: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in its own process, `code` run first (e.g. to plant a bug)."""
    script = f"import sys\n{code}\nfrom vlmsweep.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def test_a_real_process_prints_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "v.yaml"
    bad.write_text("name: x\nseed: [1\n")
    done = _cli_process(["check", str(bad), "--work-dir", str(tmp_path / "w")])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.search(rf"^error: .*{re.escape(str(bad))}:\d", done.stderr), done.stderr
    assert done.stdout == ""


def test_a_bug_keeps_its_traceback(tmp_path):
    """Unexpected failures are not dressed up as input errors: the traceback is the bug report."""
    good = tmp_path / "v.yaml"
    good.write_text(OK)
    plant = "import vlmsweep.config.load as load\ndef broken(*a, **k):\n    raise ZeroDivisionError('a bug')\n" \
            "load.load_located = broken\n"
    done = _cli_process(["check", str(good), "--work-dir", str(tmp_path / "w")], plant)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ZeroDivisionError: a bug" in done.stderr
