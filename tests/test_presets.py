"""Tiny presets are whole whichever process writes them first: on a cluster every node builds
its own, and there the first may be a rank-1 Train worker inside a torch.distributed group,
where transformers' save_pretrained writes no weights (only rank 0 saves)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from vlmsweep.config.schema import LLMConfig, VisionConfig
from vlmsweep.models.llm import resolve_checkpoint as llm_checkpoint
from vlmsweep.models.vision import resolve_checkpoint as vision_checkpoint


def _write_presets(rank: int, root: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        vision_checkpoint(VisionConfig(family="siglip"), f"{root}/rank{rank}")
        llm_checkpoint(LLMConfig(family="llama"), f"{root}/rank{rank}")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_a_rank1_worker_writes_whole_presets_equal_to_rank0s(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_write_presets, args=(str(tmp_path), port), nprocs=2, join=True)
    for kind in ("vision-siglip-tiny", "llm-llama-tiny"):
        zero, one = (tmp_path / f"rank{r}" / kind for r in (0, 1))
        assert (one / "model.safetensors").is_file() and (one / "config.json").is_file(), sorted(os.listdir(one))
        a, b = load_file(str(zero / "model.safetensors")), load_file(str(one / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)   # deterministic: same on every node
    assert Path(tmp_path / "rank1" / "llm-llama-tiny" / "tokenizer.json").is_file()


def test_the_seed_alone_decides_the_connector_whether_or_not_presets_were_built_first(tmp_path):
    """A stage's worker builds the presets on a node that has none yet. Building one seeds and
    draws torch's RNG, which the connector's initialisation draws from next: on a cluster the
    same stage then began from a different connector depending on where it ran (the node-removal
    fault test's flaky weights). Built or found, the connector must be the same."""
    from vlmsweep.config.load import resolve
    from vlmsweep.models.vlm import build_vlm

    model = resolve({"name": "rng", "model": {"vision": {"family": "siglip"}, "llm": {"family": "llama"},
                                              "connector": {"name": "mlp2x_gelu"}}}).model
    connectors = []
    for _ in ("built", "found"):                 # the first call builds the presets, the second loads them
        torch.manual_seed(7)
        connectors.append(build_vlm(model, tmp_path / "presets").connector.state_dict())
    for name, tensor in connectors[0].items():
        assert torch.equal(tensor, connectors[1][name]), name
