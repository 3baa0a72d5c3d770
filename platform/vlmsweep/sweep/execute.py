"""Run one planned stage in the current process: the body of a Tune trial.

A training stage drives one Ray Train TorchTrainer (its workers are placed by Ray); an
evaluation stage generates and scores here, on the resources its trial was given. The
scheduler (tune.py) decides when; this module only knows how.
"""

from __future__ import annotations

import json

from vlmsweep.config.workdir import WorkDir

from .plan import StageNode


def execute_stage(node: StageNode, nodes: dict[str, StageNode], work: WorkDir, sink=None,
                  callbacks: list | None = None) -> dict:
    """Train or evaluate `node`; returns its summary (what the manifest / results hold)."""
    from vlmsweep import storage
    from vlmsweep.eval.run import evaluate, flat_metrics, make_judge
    from vlmsweep.train.stage import run_stage

    init = nodes[node.inputs[0]].out_dir if node.inputs else None
    if node.kind == "train":
        result = run_stage(node.cfg, node.index, work=work, shard_dir=node.split_dir, out_dir=node.out_dir,
                           init_dir=init, sink=sink, callbacks=callbacks or [])
        return result.summary
    e = node.cfg.eval
    results = evaluate(init, e.benchmarks, node.split_dir, node.out_dir, work.model_root(), batch_size=e.batch_size,
                       max_new_tokens=e.max_new_tokens, log=lambda *_: None, judge=make_judge(e.judge))
    # written last: its presence is what marks the eval stage done (StageNode.done)
    storage.write_text(storage.join(node.out_dir, "results.json"), json.dumps(results, default=str))
    return {"eval": flat_metrics(results)}
