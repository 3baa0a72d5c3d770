"""One variant = a grid of one: `vlmsweep run` goes through the same planner, Tune driver
and tracking as a sweep, so a single run and a grid behave (and resume) alike."""

from __future__ import annotations

from dataclasses import dataclass, field

from vlmsweep.config.grid import Grid, Variant
from vlmsweep.config.schema import VariantConfig
from vlmsweep.config.workdir import WorkDir

from .runner import run_sweep


@dataclass
class StageOutcome:
    name: str
    out_dir: str
    reused: bool


@dataclass
class VariantResult:
    name: str
    run_id: str          # the variant's run (a child of the grid-of-one's sweep run)
    status: str
    stages: list[StageOutcome] = field(default_factory=list)


def run_variant(cfg: VariantConfig, work: WorkDir, address: str | None = None, log=print) -> VariantResult:
    grid = Grid(name=cfg.name, source="", axes={}, variants=[Variant(cfg.name, {}, cfg)])
    result = run_sweep(grid, work, address=address, log=log)
    chain = result.plan.chains[cfg.name]
    stages = [StageOutcome(result.plan.stages[s].name, result.plan.stages[s].out_dir, s in result.reused) for s in chain]
    return VariantResult(cfg.name, result.variant_runs[cfg.name], result.variants[cfg.name], stages)
