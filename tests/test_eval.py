"""Evaluation end to end on the world's benchmark sets: batch-size independence, results files,
missing images counted, the CLI (generate + table, and score-only mode)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from vlmsweep.cli import main
from vlmsweep.config.load import dump_resolved, resolve
from vlmsweep.eval.generate import load_checkpoint
from vlmsweep.eval.run import WORLD_BENCHMARKS, evaluate_model, flat_metrics
from vlmsweep.eval.world_sets import build_benchmarks
from vlmsweep.models.vlm import build_vlm
from vlmsweep.train.stage_output import save_stage


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    build_benchmarks(out, seed=0, size="tiny", image_size=32)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, preset_root):
    """A stage output written by the real save path, from an untrained tiny VLM."""
    cfg = resolve({"name": "eval-test", "model": {"vision": {"family": "clip"}, "llm": {"family": "qwen2"}},
                   "recipe": "single_stage", "training": {"steps": 1, "global_batch": 1, "micro_batch": 1}})
    torch.manual_seed(cfg.seed)
    vlm = build_vlm(cfg.model, preset_root)
    out = tmp_path_factory.mktemp("stage")
    save_stage(vlm, out, stage="finetune", modes={"vision": "frozen", "connector": "full", "llm": "full"},
               init_dir=None, config_yaml=dump_resolved(cfg), summary={"steps": 0})
    return str(out)


def test_predictions_and_scores_are_identical_at_batch_size_1_and_16(checkpoint, preset_root, bench_dir, tmp_path):
    model = load_checkpoint(checkpoint, preset_root)
    runs = {bs: evaluate_model(model, list(WORLD_BENCHMARKS), bench_dir, tmp_path / f"bs{bs}", batch_size=bs,
                               max_new_tokens=8, log=lambda *_: None) for bs in (1, 16)}
    for bench in WORLD_BENCHMARKS:
        one, sixteen = runs[1][bench], runs[16][bench]
        assert [i["prediction"] for i in one["items"]] == [i["prediction"] for i in sixteen["items"]], bench
        assert one["metrics"] == sixteen["metrics"], bench
        assert one["counts"]["items"] > 0 and one["counts"]["unusable_image"] == 0
        saved = json.loads((tmp_path / "bs16" / f"{bench}.json").read_text())
        assert saved["metrics"] == sixteen["metrics"] and len(saved["answers"]) == one["counts"]["items"]
        assert (tmp_path / "bs16" / "answers" / f"{bench}.jsonl").is_file()
    assert "pope/f1" in flat_metrics(runs[1]) and "mme/perception" in flat_metrics(runs[1])
    # each benchmark's official output files, beside the results
    out = tmp_path / "bs16"
    submission = json.loads((out / "vqav2_answers_upload.json").read_text())
    assert [r["question_id"] for r in submission] == [i["question_id"] for i in runs[16]["vqav2"]["items"]]
    lines = (out / "mme_eval_tool" / "existence.txt").read_text().splitlines()
    assert len(lines) % 2 == 0 and all(len(line.split("\t")) == 4 for line in lines)


def test_bf16_placement_generates_from_bf16_weights_and_records_where(checkpoint, preset_root, bench_dir, tmp_path):
    """The precision a GPU evaluates in, run here on the CPU: the same loading and generation
    code, weights cast as they load (a 3B model never exists in fp32 first)."""
    from vlmsweep.config.errors import InputError
    from vlmsweep.eval.generate import available_device, placement

    assert placement() == ("cpu", torch.float32)        # no GPU here: fp32 on the CPU
    with pytest.raises(InputError, match="--device: cuda: this machine has no CUDA GPU"):
        available_device("cuda")                        # eval's, chat's and demo's --device
    assert placement("cpu", "bfloat16") == ("cpu", torch.bfloat16)
    for bad in ({"device": "tpu"}, {"dtype": "float16"}):
        with pytest.raises(ValueError):
            placement(**bad)
    model = load_checkpoint(checkpoint, preset_root, "cpu", torch.bfloat16)
    assert {p.dtype for p in model.vlm.parameters()} == {torch.bfloat16}
    result = evaluate_model(model, ["pope", "vqav2"], bench_dir, tmp_path, batch_size=4, max_new_tokens=4,
                            log=lambda *_: None)
    for bench, r in result.items():
        assert (r["device"], r["dtype"]) == ("cpu", "bfloat16"), bench
        assert r["counts"]["generated"] == r["counts"]["items"] > 0
    fp32 = evaluate_model(load_checkpoint(checkpoint, preset_root), ["pope"], bench_dir, tmp_path / "fp32",
                          max_new_tokens=4, log=lambda *_: None)["pope"]
    assert (fp32["device"], fp32["dtype"]) == ("cpu", "float32")


def test_missing_and_unreadable_images_are_counted_not_fatal(checkpoint, preset_root, bench_dir, tmp_path):
    import shutil

    copy = tmp_path / "bench"
    shutil.copytree(bench_dir / "gqa", copy / "gqa")
    images = sorted((copy / "gqa" / "data" / "images").glob("*.png"))
    images[0].unlink()
    images[1].write_bytes(b"not a png")
    model = load_checkpoint(checkpoint, preset_root)
    result = evaluate_model(model, ["gqa"], copy, tmp_path / "out", max_new_tokens=4, log=lambda *_: None)["gqa"]
    lost = {u["question_id"] for u in result["unusable"]}
    assert result["counts"]["unusable_image"] == len(result["unusable"]) == len(lost) == 6  # 2 images, 3 questions each
    assert result["counts"]["answered"] == result["counts"]["items"] - 6
    assert result["counts"]["missing"] == 6 and any("have no answer; scored as wrong" in n for n in result["notes"])


def test_cli_eval_prints_a_table_and_score_mode_rescores_answers(checkpoint, preset_root, bench_dir, tmp_path,
                                                                 capsys, monkeypatch):
    monkeypatch.setenv("VLMSWEEP_WORK_DIR", str(Path(preset_root).parent))
    monkeypatch.setattr("vlmsweep.config.workdir.WorkDir.presets", property(lambda self: Path(preset_root)))
    out = tmp_path / "results"
    assert main(["eval", checkpoint, "--bench", "pope,scienceqa", "--data", str(bench_dir), "--out", str(out),
                 "--max-new-tokens", "4"]) == 0
    table = capsys.readouterr().out
    assert "pope" in table and "scienceqa" in table and (out / "pope.json").is_file()
    assert json.loads((out / "pope.json").read_text())["dtype"] == "float32"   # auto, without a GPU
    # asking for a GPU this machine doesn't have: one line naming the flag, exit 2
    assert main(["eval", checkpoint, "--bench", "pope", "--data", str(bench_dir), "--device", "cuda"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --device: cuda: this machine has no CUDA GPU; "
                                               "use --device cpu (or auto)")

    # score mode: the answers file the run wrote (LLaVA's format) and its results JSON score the same
    saved = json.loads((out / "scienceqa.json").read_text())
    for answers in (out / "answers" / "scienceqa.jsonl", out / "scienceqa.json"):
        assert main(["eval", "score", "--bench", "scienceqa", "--answers", str(answers),
                     "--annotations", str(bench_dir / "scienceqa")]) == 0
        assert json.loads(capsys.readouterr().out)["metrics"] == saved["metrics"]


def test_unknown_benchmark_is_a_config_error_listing_the_allowed_names():
    from vlmsweep.config.errors import ConfigError
    from vlmsweep.config.schema import EvalConfig
    from vlmsweep.eval.run import check_eval

    with pytest.raises(ConfigError) as err:
        check_eval(EvalConfig(benchmarks=["vqav2", "vqa3"]))
    assert "eval.benchmarks.1" in str(err.value) and "gqa" in str(err.value)
