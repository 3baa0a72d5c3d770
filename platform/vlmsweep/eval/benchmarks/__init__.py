"""The benchmark registry: one folder per benchmark (spec, official-layout readers, scoring
rule, world builder — see base.py), one line each here. Evaluation, the world's benchmark
sets, the planner and the report all read this list; adding a benchmark is a folder and a line.
"""

from __future__ import annotations

from vlmsweep.config.errors import lookup

from . import gqa, mme, mmmu, mmvet, pope, scienceqa, textqa, textvqa, vqav2
from .base import Answer, Benchmark, Item

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    vqav2.BENCHMARK,
    gqa.BENCHMARK,
    textvqa.BENCHMARK,
    scienceqa.BENCHMARK,
    pope.BENCHMARK,
    mme.BENCHMARK,
    mmmu.BENCHMARK,
    mmvet.BENCHMARK,
    textqa.BENCHMARK,
)}

# the ones the synthetic world builds a set for (MM-Vet needs a judge and real data)
WORLD_BENCHMARKS = tuple(name for name, b in BENCHMARKS.items() if b.in_world)
# (benchmark, headline metric) in table order: every one is "higher is better"
HEADLINE = [(name, b.metrics[0]) for name, b in BENCHMARKS.items()]


def get_benchmark(name: str) -> Benchmark:
    """Exact-name lookup; an unknown name raises UnknownNameError listing the allowed ones."""
    return lookup(BENCHMARKS, "benchmark", name, field="eval.bench")


__all__ = ["BENCHMARKS", "HEADLINE", "WORLD_BENCHMARKS", "Answer", "Benchmark", "Item", "get_benchmark"]
