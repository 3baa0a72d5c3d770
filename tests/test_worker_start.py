"""What a Train worker imports before its first step: DeepSpeed without mlflow (its autotuner's
optional import) and without compiling Muon's update functions (our optimizer is AdamW)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_deepspeed_is_imported_without_mlflow_or_compiling_muon_and_mlflow_still_imports():
    code = textwrap.dedent("""
        import sys
        from vlmsweep.train.engine import import_deepspeed
        ds = import_deepspeed()
        assert "mlflow" not in sys.modules, "deepspeed pulled in mlflow"
        from deepspeed.runtime.zero.muon import original_muon
        from deepspeed.runtime.zero.muon.muon_optimizer import MuonWithAuxAdam
        assert not hasattr(original_muon.muon_update, "_torchdynamo_orig_callable"), "muon was compiled"
        from deepspeed.runtime import compiler
        import torch
        assert compiler.compile() is torch.compile            # DeepSpeed's own decorator is back
        assert not isinstance(torch.optim.AdamW([torch.zeros(1, requires_grad=True)]), MuonWithAuxAdam)
        import mlflow.tracking                                  # the rank-0 metrics sink's import
        assert import_deepspeed() is ds
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={
        **__import__("os").environ, "DS_ACCELERATOR": "cpu"}, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_a_stage_without_gpus_trains_on_the_cpu_when_deepspeed_was_told_cuda():
    """On a GPU machine DeepSpeed picks CUDA (detected, or DS_ACCELERATOR=cuda as here), and
    Ray leaves the GPU visible to workers that asked for none: a CPU stage's rank 1 then
    asked for cuda:1. The stage's own resources decide, before DeepSpeed is imported."""
    code = textwrap.dedent("""
        import os
        from vlmsweep.config.schema import TrainingConfig
        from vlmsweep.train.engine import import_deepspeed, use_stage_accelerator
        use_stage_accelerator(TrainingConfig(steps=1, gpus_per_worker=1))
        assert os.environ["DS_ACCELERATOR"] == "cuda"           # a GPU stage keeps what it was given
        use_stage_accelerator(TrainingConfig(steps=1))
        ds = import_deepspeed()
        assert ds.accelerator.get_accelerator().device_name() == "cpu"
        use_stage_accelerator(TrainingConfig(steps=1))           # again, DeepSpeed imported: still fine
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={
        **__import__("os").environ, "DS_ACCELERATOR": "cuda"}, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
