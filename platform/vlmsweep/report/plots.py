"""PNG plots: one bar chart per benchmark, one loss-curve chart per training stage.

Figures are built with matplotlib.figure.Figure directly, never pyplot: pyplot keeps global
state and picks an interactive backend when a display exists; a bare Figure renders with Agg
and is released when it goes out of scope, which is what a headless report job wants.
"""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from vlmsweep.eval.chance import above_chance

from .collect import SweepData
from .tables import (
    AT_CHANCE,
    CHANCE,
    CHANCE_P,
    axes_with_choices,
    benchmarks,
    beside_table,
    comparisons,
    finished,
    variant_table,
)

DPI = 110


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_")


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight")  # "tight": keep legends placed outside
    return path


def bar_plots(data: SweepData, out_dir: Path) -> list[Path]:
    """One PNG per benchmark: variants on x in the table's order, coloured by the first axis that varies."""
    table = variant_table(data)
    if table.empty:
        return []
    colour_axis = next(iter(axes_with_choices(data)), None)
    palette = [f"C{i}" for i in range(10)]
    if colour_axis:
        groups = table[colour_axis].fillna("–").astype(str)  # a variant without the axis gets its own colour
        labels = list(dict.fromkeys(groups))
        colours = [palette[labels.index(v) % 10] for v in groups]
    else:
        labels, colours = [], [palette[0]] * len(table)
    width = max(4.0, 0.55 * len(table) + 1.5)
    errors, comps = beside_table(data), comparisons(data)
    chance, chance_p = beside_table(data, CHANCE), beside_table(data, CHANCE_P)
    paths = []
    for name, key in benchmarks(data):
        fig = Figure(figsize=(width, 3.6))
        ax = fig.add_subplot()
        values = table[name].fillna(0.0)  # a missing score draws no bar; its label still says "–"
        err = errors[name].astype(float)
        bars = ax.bar(range(len(table)), values, color=colours,
                      yerr=err.fillna(0.0).to_numpy() if err.notna().any() else None, capsize=3,
                      error_kw={"elinewidth": 0.8, "ecolor": "0.3"})
        at_chance = [above_chance(p) is False for p in chance_p[name]]
        ax.bar_label(bars, labels=[("–" if v != v else f"{v:.1f}" + (f" {AT_CHANCE}" if low else ""))
                                   for v, low in zip(table[name], at_chance)], fontsize=7, padding=2)
        if chance[name].notna().any():   # each variant's chance level: a tick across its bar
            ax.hlines(chance[name], [i - 0.4 for i in range(len(table))], [i + 0.4 for i in range(len(table))],
                      colors="k", linestyles="dashed", linewidth=1.0, label="chance")
        ax.set_xticks(range(len(table)), [str(v) for v in table.index], rotation=40, ha="right", fontsize=8)
        ax.set_ylabel(key.split("/", 1)[1])
        known = [c for c in comps if c.column == name and c.beyond is not None]
        title = name
        if known:
            beyond = sum(bool(c.beyond) for c in known)
            title = f"{name}: {beyond} of {len(known)} differences from the best exceed noise (bars: ± stderr)"
        if chance[name].notna().any():
            above, scored = sum(above_chance(p) is True for p in chance_p[name]), int(chance_p[name].notna().sum())
            title += f"\n{above} of {scored} above chance (dashed: each variant's chance level; {AT_CHANCE}: not above)"
        ax.set_title(title, fontsize=9)
        ax.margins(y=0.15)
        if colour_axis:
            ax.legend(handles=[Patch(color=palette[i % 10], label=lab) for i, lab in enumerate(labels)],
                      title=colour_axis, fontsize=7, title_fontsize=7,
                      loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the axes: never over a bar
        paths.append(_save(fig, out_dir / f"bar_{_slug(key[len('eval/'):])}.png"))
    return paths


def loss_plots(data: SweepData, out_dir: Path) -> list[Path]:
    """One PNG per stage name; one line per stage *run*, so a stage shared by several variants is
    drawn once and its legend entry names every variant that used it."""
    failed = set(data.variants.loc[data.variants["status"] != "FINISHED", "variant"])
    stages: dict[str, dict[str, tuple]] = {}  # stage → stage run id → (curve, [variants])
    for variant in data.variants["variant"]:
        for curve in data.curves.get(variant, []):
            entry = stages.setdefault(curve.stage, {}).setdefault(curve.run_id, (curve, []))
            entry[1].append(variant + (" (not finished)" if variant in failed else ""))
    paths = []
    for stage, runs in stages.items():
        fig = Figure(figsize=(6.4, 3.8))
        ax = fig.add_subplot()
        for curve, users in runs.values():
            shown = ", ".join(users) if len(users) <= 3 else f"{', '.join(users[:3])} +{len(users) - 3}"
            ax.plot(curve.steps, curve.values, linewidth=1.2, label=shown)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("train/loss")
        ax.set_title(f"{stage}: training loss")
        ax.grid(alpha=0.3)
        if len(runs) <= 12:  # past that a legend hides the curves
            ax.legend(fontsize=7)
        paths.append(_save(fig, out_dir / f"loss_{_slug(stage)}.png"))
    return paths


def all_plots(data: SweepData, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    if finished(data).empty and not any(data.curves.values()):
        return []
    return bar_plots(data, out_dir) + loss_plots(data, out_dir)
