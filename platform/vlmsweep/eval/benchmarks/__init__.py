"""Benchmark scorers, one module each (as lmms-eval's tasks): load a benchmark's question
file as Items, read its answer key, and score predictions the way its official script does."""

from __future__ import annotations

from vlmsweep.config.errors import lookup

from . import gqa, mme, mmmu, mmvet, pope, scienceqa, textvqa, vqav2
from .base import Benchmark, Item

BENCHMARKS: dict[str, Benchmark] = {
    "vqav2": vqav2.BENCHMARK,
    "gqa": gqa.BENCHMARK,
    "textvqa": textvqa.BENCHMARK,
    "scienceqa": scienceqa.BENCHMARK,
    "pope": pope.BENCHMARK,
    "mme": mme.BENCHMARK,
    "mmmu": mmmu.BENCHMARK,
    "mmvet": mmvet.BENCHMARK,
}


def get_benchmark(name: str) -> Benchmark:
    """Exact-name lookup; an unknown name raises UnknownNameError listing the allowed ones."""
    return lookup(BENCHMARKS, "benchmark", name, field="eval.bench")


__all__ = ["BENCHMARKS", "Benchmark", "Item", "get_benchmark"]
