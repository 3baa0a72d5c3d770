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
