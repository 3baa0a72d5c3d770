"""A grid → a plan of unique stages: data → train stages → eval, shared wherever equal.

Every variant is a chain of stages. A training stage's identity is the hash of the model,
the data content, the seed and its recipe up to and including itself (train/stage.py:
stage_id); an evaluation stage's is the hash of the checkpoint it scores and its eval
config. Equal identities are one stage: computed once, used by every variant that needs
it, and found again in the work dir by a later sweep or a resume.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from vlmsweep import storage
from vlmsweep.config.errors import ConfigError
from vlmsweep.config.grid import Grid
from vlmsweep.config.schema import VariantConfig
from vlmsweep.config.workdir import WorkDir
from vlmsweep.data.prepare import data_identity, ensure_splits
from vlmsweep.eval.world_sets import ensure_world_benchmarks, world_bench_identity
from vlmsweep.train.stage import stage_id, text_only_mix, weights_identity
from vlmsweep.train.stage_output import is_complete


@dataclass
class StageNode:
    id: str
    kind: str                   # "train" | "eval"
    name: str                   # the recipe's stage name, or "eval"
    cfg: VariantConfig          # the first variant that needs it (every user agrees up to this stage)
    index: int                  # recipe index of a train stage; -1 for eval
    out_dir: str
    inputs: list[str] = field(default_factory=list)   # stage ids this one starts from
    split_dir: str = ""         # train: the shard dir it reads; eval: the benchmark root
    variants: list[str] = field(default_factory=list)

    def done(self) -> bool:
        return is_complete(self.out_dir) if self.kind == "train" else storage.is_file(storage.join(self.out_dir, "results.json"))


@dataclass
class Plan:
    grid: Grid
    stages: dict[str, StageNode]            # in dependency order
    chains: dict[str, list[str]]            # variant name -> its stage ids, in order
    data: dict[str, dict[str, str]]         # data identity -> split dirs (prepared before training)
    notes: list[str] = field(default_factory=list)

    def ready(self, finished: set[str], failed: set[str]) -> list[StageNode]:
        """Stages not yet done whose inputs all finished."""
        return [s for s in self.stages.values() if s.id not in finished and s.id not in failed
                and all(i in finished for i in s.inputs)]

    def blocked_by(self, failed: set[str]) -> set[str]:
        """Variants that need a failed stage."""
        return {v for v, chain in self.chains.items() if failed & set(chain)}


def eval_id(checkpoint_id: str, cfg: VariantConfig, bench_root: str) -> str:
    payload = [checkpoint_id, cfg.eval.model_dump(mode="json", exclude={"judge"}), bench_root]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def make_plan(grid: Grid, work: WorkDir, dry_run: bool = False) -> Plan:
    """The plan; with dry_run, data that isn't prepared yet is a note and its stage ids are
    provisional (named by path, not content: they change once the shards exist)."""
    stages: dict[str, StageNode] = {}
    chains: dict[str, list[str]] = {}
    data: dict[str, dict[str, str]] = {}
    notes: list[str] = []
    for variant in grid.variants:
        cfg = variant.config
        try:
            splits = ensure_splits(cfg.data, work)  # cheap once generated; the plan needs content hashes
            identity, prepared = data_identity(splits), True
        except ConfigError as err:
            if not dry_run:
                raise
            splits = {split: str(path) for split, path in cfg.data.splits.items()}
            identity, prepared = json.dumps({"unprepared": splits}, sort_keys=True), False
            notes += [f"data not prepared here, stage ids provisional: {f}: {m.splitlines()[0][:160]}"
                      for f, m in err.problems]
        data[identity] = splits
        chain, previous = [], None
        weights = weights_identity(cfg, work)
        mixes = _mix_identities(cfg, splits, prepared)
        for index, stage in enumerate(cfg.recipe.stages):
            sid = f"{stage.name}-{stage_id(cfg, index, identity, weights, mixes)}"
            node = stages.setdefault(sid, StageNode(sid, "train", stage.name, cfg, index, work.path("stages", sid),
                                                    [previous] if previous else [], splits[stage.split]))
            node.variants.append(variant.name)
            chain.append(sid)
            previous = sid
        if cfg.eval.benchmarks:
            # the world's sets are named by their content (generator versions, size, seed), not by
            # where this work dir happens to be; a user's benchmark dir is named by its path
            if cfg.eval.data:
                bench_root, bench_identity = storage.normalize(os.path.expandvars(cfg.eval.data)), cfg.eval.data
            else:
                bench_root, bench_identity = ensure_world_benchmarks(cfg.data, work), world_bench_identity(cfg.data)
            eid = f"eval-{eval_id(previous, cfg, bench_identity)}"
            node = stages.setdefault(eid, StageNode(eid, "eval", "eval", cfg, -1, work.path("stages", eid),
                                                    [previous], bench_root))
            node.variants.append(variant.name)
            chain.append(eid)
        chains[variant.name] = chain
    return Plan(grid, stages, chains, data, sorted(set(notes)))


def _mix_identities(cfg: VariantConfig, splits: dict[str, str], prepared: bool) -> list[dict | None] | None:
    """Per training stage, the text-only mix its split gets (train/stage.py: stage_id). Unprepared
    (a dry run), the ratio alone stands in for it, so variants that differ in it stay apart."""
    if cfg.data.text_only_ratio is None:
        return None
    if not prepared:
        return [{"text_only_ratio": cfg.data.text_only_ratio}] * len(cfg.recipe.stages)
    mixes = [text_only_mix(cfg, splits[stage.split]) for stage in cfg.recipe.stages]
    return [m.identity() if m else None for m in mixes]


def describe(plan: Plan) -> str:
    """The --dry-run text: variants, unique stages per kind, reuse, and what dedup saves."""
    alone = sum(len(c) for c in plan.chains.values()) + len(plan.chains)  # + one data prep per variant
    unique = len(plan.stages) + len(plan.data)
    done = [s for s in plan.stages.values() if s.done()]
    lines = [f"sweep {plan.grid.name}: {len(plan.chains)} variant(s) from {plan.grid.source}"]
    for name, chain in plan.chains.items():
        lines.append(f"  {name}: " + " → ".join(chain))
    kinds = {"data": len(plan.data)}
    for s in plan.stages.values():
        key = "eval" if s.kind == "eval" else s.name
        kinds[key] = kinds.get(key, 0) + 1
    lines.append("unique stages: " + ", ".join(f"{k} {n}" for k, n in kinds.items()) + f" (total {unique})")
    shared = [s for s in plan.stages.values() if len(s.variants) > 1]
    for s in shared:
        lines.append(f"  shared: {s.id} used by {len(s.variants)} variants")
    lines.append(f"already done in the work dir (reused): {len(done)}" +
                 "".join(f"\n  {s.id}" for s in done))
    lines.append(f"stage runs: {unique} planned vs {alone} running each variant alone "
                 f"({alone - unique} saved); {unique - len(plan.data) - len(done)} left to run")
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)
