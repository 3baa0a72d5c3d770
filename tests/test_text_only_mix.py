"""data.text_only_ratio: the text-only share of a training split (DeepSpeed-VisualChat's mix), as a
data knob and a grid axis: the keep fractions, the per-row choice, the stage identity."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from vlmsweep.config.grid import load_grid
from vlmsweep.config.workdir import WorkDir
from vlmsweep.data.mix import MixCounts, plan_mix, why_not
from vlmsweep.sweep.plan import make_plan

ROOT = Path(__file__).resolve().parents[1]
WORLD = {"image": 2400, "multi_image": 300, "text": 300}   # the small world's instruct split: 10% text-only


@pytest.mark.parametrize("ratio", [0.0, 0.02, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_the_keep_fractions_give_the_ratio_thinning_the_larger_kind_only(ratio):
    mix = plan_mix(WORLD, ratio, seed=0)
    text, image = 300 * mix.keep_text, 2700 * mix.keep_image
    assert text / (text + image) == pytest.approx(ratio)
    assert max(mix.keep_text, mix.keep_image) == 1.0 and min(mix.keep_text, mix.keep_image) >= 0.0
    assert (mix.keep_text < 1) == (ratio < 0.1)     # below the split's own share, text-only rows go


def test_an_epoch_of_a_streamed_split_is_the_rows_the_mix_keeps():
    """Epoch-mode stages (the DSVL recipe's 3 epochs) count progress in rows: with a mix, an
    epoch is what it keeps, not the whole split (a prepared split counts them exactly)."""
    assert plan_mix(WORLD, 0.05, 0).expected_rows(WORLD, 3000) == round(300 * 0.05 * 2700 / (0.95 * 300)) + 2700
    assert plan_mix(WORLD, 0.5, 0).expected_rows(WORLD, 3010) == 300 + 300 + 10    # 10 rows of no modality


def test_nothing_to_mix_is_said_not_silently_done():
    assert plan_mix(WORLD, None, 0) is None
    captions = {"image": 558}
    assert plan_mix(captions, 0.3, 0) is None and why_not(captions, 0.3) == "it has no text-only rows"
    assert why_not(captions, 0.0) is None                       # already what was asked
    assert why_not({"text": 5}, 0.5) == "it has no rows with images" and why_not(None, 0.5)


def prepared_rows(n: int, text_every: int = 5, skip_every: int = 97) -> pa.Table:
    ids = [f"row{k}" for k in range(n)]
    images = [0 if k % text_every == 0 else 1 + k % 2 for k in range(n)]
    skips = ["overlong" if k % skip_every == 0 else "" for k in range(n)]
    return pa.table({"id": ids, "num_images": pa.array(images, pa.int32()), "skip_reason": skips})


@pytest.mark.parametrize("ratio", [0.05, 0.4])
def test_rows_are_chosen_by_row_alone_near_the_ratio_and_skips_always_pass(ratio):
    table = prepared_rows(4000)
    modalities = {"text": 800, "image": 3200}
    mix = plan_mix(modalities, ratio, seed=0)
    kept = mix.apply(table)
    counts = MixCounts.of(table, mix)
    assert counts.share == pytest.approx(ratio, abs=0.02)
    assert counts.text_kept + counts.image_kept + sum(1 for s in table.column("skip_reason").to_pylist() if s) \
        == kept.num_rows
    assert set(kept.filter(pa.compute.not_equal(kept.column("skip_reason"), "")).column("id").to_pylist()) == \
        {f"row{k}" for k in range(0, 4000, 97)}
    # the same rows whatever the order they come in (shards, ranks, resume)
    order = np.random.default_rng(1).permutation(4000)
    assert set(mix.apply(table.take(pa.array(order))).column("id").to_pylist()) == set(kept.column("id").to_pylist())
    # another seed keeps other rows, as many of them
    other = plan_mix(modalities, ratio, seed=1).apply(table)
    assert set(other.column("id").to_pylist()) != set(kept.column("id").to_pylist())
    assert abs(other.num_rows - kept.num_rows) < 0.05 * kept.num_rows


def test_the_ratio_changes_only_the_stages_whose_split_has_text_only_rows(tmp_path):
    """A grid over data.text_only_ratio: the pretrain stage (captions: no text-only rows) is one
    stage for every ratio; each ratio finetunes its own; no ratio keeps the ids it always had."""
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent(f"""
        name: mix
        base: {ROOT / 'experiments/smoke/variant.yaml'}
        variant: {{data: {{synthetic: {{image_size: 32}}}}, eval: {{benchmarks: []}}}}
        naming: "mix-{{text_only}}"
        axes:
          data.text_only_ratio: [null, 0.0, 0.3]
    """).replace("{text_only}", "data.text_only_ratio"))
    plan = make_plan(load_grid(grid), WorkDir.at(tmp_path / "work"))
    chains = list(plan.chains.values())
    assert len(chains) == 3 and len({c[0] for c in chains}) == 1          # one pretrain for all
    assert len({c[1] for c in chains}) == 3                                 # a finetune per ratio
    plain = tmp_path / "plain.yaml"
    plain.write_text(grid.read_text().replace("[null, 0.0, 0.3]", "[null]"))
    (alone,) = make_plan(load_grid(plain), WorkDir.at(tmp_path / "work")).chains.values()
    assert alone == chains[0]                           # unset: the ids of a grid without the axis
