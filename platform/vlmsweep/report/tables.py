"""The report's tables: variants × benchmarks, and one pivot per ablation axis.

Numbers are computed as DataFrames (tests and plots use those); `Grid` is the same table as
display text plus which cells to mark, so Markdown and HTML always show identical content.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import pandas as pd

from vlmsweep.eval.benchmarks import HEADLINE
from vlmsweep.eval.chance import ALPHA, above_chance
from vlmsweep.eval.stderr import Z, exceeds_noise, paired_stderr

from .collect import AXIS, SweepData, axis_labels

# HEADLINE: one metric per benchmark, in the order the table shows them, from the benchmark
# registry (each benchmark's first metric). Every one is "higher is better", which is what
# marking the column maximum as best relies on. ScienceQA's headline is `accuracy` (all
# questions), not `img_accuracy`, so it compares across variants that differ in whether they
# see images at all.
DASH = "–"
BEYOND, WITHIN = "†", "≈"   # differs from its column's best beyond the noise / within it
STDERR = "_stderr"          # eval/<bench>/<metric>_stderr, logged by eval next to each score
CHANCE, CHANCE_P = "_chance", "_chance_p"   # its chance level and permutation p (eval/chance.py)
AT_CHANCE = "○"             # a score not above its chance level


@dataclass
class Grid:
    title: str
    header: list[str]
    rows: list[list[str]]
    bold: list[list[bool]]
    text_cols: int = 1   # leading columns of labels (left-aligned); the rest are numbers
    notes: list[str] = field(default_factory=list)   # plain sentences shown under the table


def label(bench: str, metric: str) -> str:
    return bench if metric == "accuracy" else f"{bench} ({metric})"


def finished(data: SweepData) -> pd.DataFrame:
    """Variants that ran to the end: a failed run's metrics are partial, so it is listed apart."""
    return data.variants[data.variants["status"] == "FINISHED"]


def benchmarks(data: SweepData) -> list[tuple[str, str]]:
    """(column label, metric key) for each headline benchmark that some finished variant has."""
    done = finished(data)
    out = []
    for bench, metric in HEADLINE:
        key = f"eval/{bench}/{metric}"
        if key in done and done[key].notna().any():
            out.append((label(bench, metric), key))
    return out


def axes_with_choices(data: SweepData) -> list[str]:
    """Axes along which the finished variants actually differ: a one-label axis has nothing to compare."""
    return [a for a in data.axes if len(axis_labels(finished(data), a)) >= 2]


def variant_table(data: SweepData) -> pd.DataFrame:
    """Index: variant (in the collected order); columns: axis names, then one per benchmark label."""
    done = finished(data)
    table = pd.DataFrame(index=pd.Index(done["variant"], name="variant"))
    for axis in data.axes:
        table[axis] = done[AXIS + axis].to_numpy()
    for name, key in benchmarks(data):
        table[name] = done[key].astype(float).to_numpy()
    return table


@dataclass
class Pivot:
    axis: str
    mean: pd.DataFrame     # index: the axis's labels; columns: benchmark labels
    std: pd.DataFrame      # sample std (ddof=1): NaN when a cell has one value
    count: pd.DataFrame    # values behind each cell
    n: pd.Series           # finished variants per label


def axis_pivot(data: SweepData, axis: str) -> Pivot:
    """Each label of AXIS averaged over every other axis (seeds included)."""
    done, cols = finished(data), benchmarks(data)
    labels = axis_labels(done, axis)
    values = pd.DataFrame({name: done[key].astype(float).to_numpy() for name, key in cols},
                          index=done[AXIS + axis].to_numpy(), columns=[name for name, _ in cols])
    groups = values.groupby(level=0, sort=False)
    return Pivot(axis, groups.mean().reindex(labels), groups.std(ddof=1).reindex(labels),
                 groups.count().reindex(labels), groups.size().reindex(labels).fillna(0).astype(int))


def axis_pivots(data: SweepData) -> list[Pivot]:
    return [axis_pivot(data, a) for a in axes_with_choices(data)]


def _num(value) -> str:
    return DASH if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def _best_rows(column: pd.Series) -> set:
    """Index of every row that ties for the maximum (ties are all marked, none is preferred)."""
    if column.notna().sum() == 0:
        return set()
    top = column.max()
    return {i for i, v in column.items() if not math.isnan(v) and math.isclose(v, top, rel_tol=1e-9, abs_tol=1e-9)}


def beside_table(data: SweepData, suffix: str = STDERR) -> pd.DataFrame:
    """variant_table's benchmark columns, holding what eval logged beside each score under SUFFIX:
    its standard error (STDERR), chance level (CHANCE) or that level's p-value (CHANCE_P); NaN
    where none was logged."""
    done = finished(data)
    table = pd.DataFrame(index=pd.Index(done["variant"], name="variant"))
    for name, key in benchmarks(data):
        column = key + suffix
        table[name] = done[column].astype(float).to_numpy() if column in done else float("nan")
    return table


def chance_summary(data: SweepData) -> str | None:
    """The plain-words verdict on how many scores are above their chance level; None when no
    chance level was recorded (results scored before eval computed them)."""
    p = beside_table(data, CHANCE_P).to_numpy().ravel()
    known = [x for x in p if not math.isnan(x)]
    if not known:
        return None
    k, m = sum(bool(above_chance(x)) for x in known), len(known)
    text = (f"{k} of {m} scores are above chance ({AT_CHANCE}: not above it). A score's chance level is what "
            "the variant's own answers score when shuffled among questions of the same type (100 shuffles, "
            "fewer for sets over 20,000 answers); "
            f"it is above chance when fewer than {ALPHA:.0%} of the shuffles score as well.")
    if k == 0:
        return text + " No score is above chance: these variants have not learned to use the image and question."
    if 2 * k < m:
        return text + " Most scores are at chance level."
    return text


@dataclass
class Comparison:
    column: str          # benchmark label
    variant: str
    reference: str       # the column's best variant
    diff: float          # variant's score - reference's score
    stderr: float        # of the difference: paired over common items, else sqrt(se_a² + se_b²); NaN unknown
    paired: bool
    beyond: bool | None  # |diff| > Z * stderr; None when no stderr is known


def comparisons(data: SweepData) -> list[Comparison]:
    """Every finished variant against the best variant of each benchmark column: paired over the
    same items where both variants' per-item results were read, else from the two stderrs."""
    scores, errors = variant_table(data), beside_table(data)
    out = []
    for name, key in benchmarks(data):
        column = scores[name]
        if column.notna().sum() < 2:
            continue
        ref = column.idxmax()
        for variant, value in column.items():
            if variant == ref or pd.isna(value):
                continue
            diff = float(value - column[ref])
            mine, theirs = data.items.get(variant, {}).get(key), data.items.get(ref, {}).get(key)
            if mine and theirs:
                pdiff, se, n = paired_stderr(mine, theirs)
                paired, test = n > 1, pdiff
            else:
                paired, test = False, diff
            if not paired:
                se = math.sqrt(errors.at[variant, name] ** 2 + errors.at[ref, name] ** 2)
            out.append(Comparison(name, str(variant), str(ref), diff, se, paired, exceeds_noise(test, se)))
    return out


def noise_summary(comps: list[Comparison]) -> str:
    """The plain-words verdict on the variant table's differences."""
    known = [c for c in comps if c.beyond is not None]
    if not known:
        return ("No standard errors are recorded for these scores, so whether the differences between "
                "variants exceed the noise is unknown.")
    k, m, p = sum(bool(c.beyond) for c in known), len(known), sum(c.paired for c in known)
    how = (f"|difference| > {Z:g} × its standard error; paired over the same questions for {p} of them, "
           "from the two scores' standard errors for the rest")
    text = f"{k} of {m} differences from the best variant of each benchmark exceed the noise ({how})."
    if k == 0:
        return text + " No difference exceeds the noise: on these benchmarks the variants cannot be told apart."
    if 2 * k < m:
        return text + " Most differences are within noise: most of this ranking is not significant."
    if 2 * k == m:
        return text + " Half of the differences are within noise."
    return text + " Most differences exceed the noise."


def variant_grid(data: SweepData) -> Grid:
    table, errors = variant_table(data), beside_table(data)
    bench_cols = [name for name, _ in benchmarks(data)]
    best = {c: _best_rows(table[c].reset_index(drop=True)) for c in bench_cols}
    comps, chance_p = comparisons(data), beside_table(data, CHANCE_P)
    marks = {(c.variant, c.column): (BEYOND if c.beyond else WITHIN) for c in comps if c.beyond is not None}
    rows, bold = [], []
    for i, (variant, row) in enumerate(table.iterrows()):
        cells = []
        for c in bench_cols:
            text, se = _num(row[c]), errors.at[variant, c]
            if not pd.isna(row[c]) and not pd.isna(se):
                text += f" ± {se:.1f}"
            mark = marks.get((str(variant), c))
            if above_chance(chance_p.at[variant, c]) is False:
                mark = f"{mark} {AT_CHANCE}" if mark else AT_CHANCE
            cells.append(text + f" {mark}" if mark else text)
        rows.append([str(variant)] + [DASH if pd.isna(row[a]) else str(row[a]) for a in data.axes] + cells)
        bold.append([False] * (1 + len(data.axes)) + [i in best[c] for c in bench_cols])
    notes = [noise_summary(comps)]
    if marks:
        notes.append(f"{BEYOND}: differs from its column's best (bold) beyond the noise; {WITHIN}: within the noise.")
    if (chance := chance_summary(data)) is not None:
        notes.append(chance)
    return Grid("Variants × benchmarks", ["variant", *data.axes, *bench_cols], rows, bold, 1 + len(data.axes),
                notes)


def seed_axis(data: SweepData) -> str | None:
    """The sweep's seed axis (a name holding "seed") when the finished variants use two or more seeds."""
    return next((a for a in axes_with_choices(data) if "seed" in a.lower()), None)


def seed_grid(data: SweepData) -> Grid | None:
    """Mean ± std over seeds, for each combination of the other axes, each marked against its
    column's best combination: beyond the seed noise or within it (seed_verdicts); None without
    a seed axis."""
    seed = seed_axis(data)
    if seed is None:
        return None
    table, cols = variant_table(data), [name for name, _ in benchmarks(data)]
    others = [a for a in axes_with_choices(data) if a != seed]
    groups = table.fillna({a: DASH for a in others}).groupby(others, sort=False) if others \
        else [(("all variants",), table)]
    rows, stats = [], []
    for labels, part in groups:
        labels = labels if isinstance(labels, tuple) else (labels,)
        rows.append([*map(str, labels), str(part[seed].nunique())])
        stats.append({c: part[c].dropna() for c in cols})
    verdicts = seed_verdicts(stats, cols)
    bold = []
    for row, group, marks in zip(rows, stats, verdicts):
        for c in cols:
            values = group[c]
            std = values.std(ddof=1) if len(values) > 1 else float("nan")
            text = DASH if values.empty else f"{_num(values.mean())} ± {_num(std)}"
            row.append(text + (f" {marks[c]}" if marks.get(c) in (BEYOND, WITHIN) else ""))
        bold.append([False] * (len(row) - len(cols)) + [marks.get(c) == "best" for c in cols])
    header = [*(others or ["variants"]), "seeds", *cols]
    found = [m for marks in verdicts for m in marks.values() if m in (BEYOND, WITHIN)]
    k, m = found.count(BEYOND), len(found)
    what = " × ".join(others) or "variant"
    notes = [(f"Each cell: the mean ± sample std of the score over the {seed} axis's values "
              "(\"± –\": one seed). Bold: the best mean of its column; "
              f"{BEYOND} / {WITHIN}: differs from it beyond / within the seed noise (Welch's t-test over the "
              f"seeds, p < {SEED_ALPHA}; it needs two seeds or more on both sides).")]
    if m:
        verdict = ("no difference exceeds it: on these benchmarks the values cannot be told apart from seed noise"
                   if k == 0 else "most are within it" if 2 * k < m else
                   "half are within it" if 2 * k == m else "most exceed it")
        notes.append(f"Does the {what} matter beyond seed noise? {k} of {m} differences from the best {what} "
                     f"of each benchmark {'exceeds' if k == 1 else 'exceed'} the seed noise: {verdict}.")
    return Grid(f"Seed spread (mean ± std over {seed})", header, rows, bold, len(header) - len(cols) - 1, notes)


SEED_ALPHA = 0.05


def seed_verdicts(groups: list[dict[str, pd.Series]], cols: list[str]) -> list[dict[str, str]]:
    """Per group and column: "best" (the highest mean), BEYOND or WITHIN (its difference from the
    best against the spread over seeds: Welch's t-test, which allows the two groups different
    spreads and takes their seed counts into account; with 2-3 seeds a z-test at 2 would call
    too much significant), or absent (fewer than two seeds on a side: no spread to compare)."""
    from scipy.stats import ttest_ind_from_stats

    out = [{} for _ in groups]
    for c in cols:
        means = [g[c].mean() if len(g[c]) else float("nan") for g in groups]
        if sum(not math.isnan(x) for x in means) < 2:
            continue
        best = max((i for i, x in enumerate(means) if not math.isnan(x)), key=lambda i: means[i])
        out[best][c] = "best"
        ref = groups[best][c]
        for i, g in enumerate(groups):
            values = g[c]
            if i == best or len(values) < 2 or len(ref) < 2:
                continue
            sa, sb = values.std(ddof=1), ref.std(ddof=1)
            if sa == 0 and sb == 0:   # no spread at all: any difference is beyond it
                beyond = values.mean() != ref.mean()
            else:
                p = ttest_ind_from_stats(values.mean(), sa, len(values), ref.mean(), sb, len(ref), equal_var=False).pvalue
                beyond = bool(p < SEED_ALPHA)
            out[i][c] = BEYOND if beyond else WITHIN
    return out


def pivot_grid(p: Pivot) -> Grid:
    best = {c: _best_rows(p.mean[c]) for c in p.mean.columns}
    rows, bold = [], []
    for lab in p.mean.index:
        cells, marks = [str(lab), str(p.n[lab])], [False, False]
        for c in p.mean.columns:
            mean, std, k = p.mean.at[lab, c], p.std.at[lab, c], int(p.count.at[lab, c])
            text = DASH if k == 0 else f"{_num(mean)} ± {_num(std)}"
            if 0 < k < p.n[lab]:
                text += f" (n={k})"  # some variants with this label lack this benchmark
            cells.append(text)
            marks.append(lab in best[c])
        rows.append(cells)
        bold.append(marks)
    title = f"By {p.axis} (mean ± std over the other axes)"
    return Grid(title, [p.axis, "n", *p.mean.columns], rows, bold)


def to_markdown(grid: Grid) -> str:
    def cell(text: str, strong: bool) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if strong else text

    lines = ["| " + " | ".join(cell(h, False) for h in grid.header) + " |",
             "|" + "|".join(["---"] * grid.text_cols + ["---:"] * (len(grid.header) - grid.text_cols)) + "|"]
    lines += ["| " + " | ".join(cell(t, b) for t, b in zip(row, marks)) + " |"
              for row, marks in zip(grid.rows, grid.bold)]
    return "\n".join(lines) + "".join(f"\n\n{n}" for n in grid.notes)


def to_html(grid: Grid) -> str:
    def cell(j: int, text: str, strong: bool) -> str:
        classes = " ".join(c for c, on in (("label", j < grid.text_cols), ("best", strong)) if on)
        text = f"<b>{html.escape(text)}</b>" if strong else html.escape(text)
        return f"<td class=\"{classes}\">{text}</td>" if classes else f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in grid.header)
    body = "".join("<tr>" + "".join(cell(j, t, b) for j, (t, b) in enumerate(zip(row, marks))) + "</tr>\n"
                   for row, marks in zip(grid.rows, grid.bold))
    notes = "".join(f"\n<p class=\"noise\">{html.escape(n)}</p>" for n in grid.notes)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>{notes}"
