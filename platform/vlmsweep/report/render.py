"""report.md and report.html from SweepData, through the templates in dashboards/.

The templates use string.Template ($name placeholders) rather than Jinja2: Jinja2 is only here
as a transitive dependency of MLflow's server, and every loop lives in tables.py anyway, so the
templates only need to place finished fragments. report.html embeds its PNGs as base64 data
URIs and its CSS inline, so it can be mailed or attached to an MLflow run and still open anywhere.
"""

from __future__ import annotations

import base64
import html
import os
from datetime import datetime, timezone
from pathlib import Path
from string import Template

from .collect import SweepData
from .plots import all_plots
from .tables import Grid, axis_pivots, finished, pivot_grid, seed_grid, to_html, to_markdown, variant_grid

TEMPLATES_ENV = "VLMSWEEP_TEMPLATES"
# platform/vlmsweep/report/render.py → the repository root's dashboards/
DEFAULT_TEMPLATES = Path(__file__).resolve().parents[3] / "dashboards"
MAX_ERROR = 400  # characters of an error shown in Markdown; the HTML shows it whole


def _template(name: str, templates: Path | None) -> Template:
    root = Path(templates or os.environ.get(TEMPLATES_ENV) or DEFAULT_TEMPLATES)
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"report template {path} not found (set ${TEMPLATES_ENV} or pass templates= "
                                "to point at the directory holding report.md.tmpl and report.html.tmpl)")
    return Template(path.read_text(encoding="utf-8"))


def _facts(data: SweepData) -> list[tuple[str, str]]:
    info, v = data.sweep_run.info, data.variants
    started = datetime.fromtimestamp(info.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") \
        if info.start_time else "?"
    counts = v["status"].value_counts().to_dict() if not v.empty else {}
    status = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "none"
    return [("sweep run", info.run_id), ("status", info.status), ("started", started),
            ("variants", f"{len(v)} ({status})"), ("axes", ", ".join(data.axes) or "none"),
            ("experiment", data.experiment), ("tracking URI", data.tracking_uri)]


def _failed_rows(data: SweepData) -> list[tuple[str, str, str]]:
    v = data.variants
    bad = v[v["status"] != "FINISHED"] if not v.empty else v
    return [(r["variant"], r["status"], r["error"] or "(no error recorded)") for _, r in bad.iterrows()]


def _grids(data: SweepData) -> tuple[Grid | None, list[Grid]]:
    if finished(data).empty:
        return None, []
    seeds = seed_grid(data)
    return variant_grid(data), ([seeds] if seeds else []) + [pivot_grid(p) for p in axis_pivots(data)]


def _markdown(data: SweepData, grids, plots: list[Path], out_dir: Path, templates) -> str:
    table, pivots = grids
    md = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731 - one table cell
    summary = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {md(v)} |" for k, v in _facts(data))
    notes = "".join(f"\n> **Note:** {n}\n" for n in data.notes)
    failed = _failed_rows(data)
    failed_md = ("| variant | status | error |\n|---|---|---|\n" + "\n".join(
        f"| {md(n)} | {s} | {md(e[:MAX_ERROR] + ('…' if len(e) > MAX_ERROR else ''))} |" for n, s, e in failed)
    ) if failed else "None: every variant finished."
    return _template("report.md.tmpl", templates).substitute(
        sweep_name=data.sweep_name, summary=summary, notes=notes,
        variant_table=to_markdown(table) if table else "_No finished variant has results._",
        pivots="\n\n".join(f"### {g.title}\n\n{to_markdown(g)}" for g in pivots) or "_No axis has two or more labels._",
        plots="\n\n".join(f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in plots) or "_No plots._",
        failed=failed_md)


def _html(data: SweepData, grids, plots: list[Path], templates) -> str:
    table, pivots = grids
    e = html.escape
    summary = ("<table class=\"summary\"><tbody>" + "".join(
        f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in _facts(data)) + "</tbody></table>")
    notes = "".join(f"<p class=\"notes\"><b>Note:</b> {e(n)}</p>\n" for n in data.notes)
    images = []
    for p in plots:
        encoded = base64.b64encode(p.read_bytes()).decode("ascii")
        images.append(f"<figure><img src=\"data:image/png;base64,{encoded}\" alt=\"{e(p.stem)}\">"
                      f"<figcaption>{e(p.stem)}</figcaption></figure>")
    failed = _failed_rows(data)
    failed_html = ("<table><thead><tr><th>variant</th><th>status</th><th>error</th></tr></thead><tbody>" + "".join(
        f"<tr><td>{e(n)}</td><td>{e(s)}</td><td class=\"error\">{e(err)}</td></tr>" for n, s, err in failed)
        + "</tbody></table>") if failed else "<p>None: every variant finished.</p>"
    return _template("report.html.tmpl", templates).substitute(
        sweep_name=e(data.sweep_name), summary=summary, notes=notes,
        variant_table=to_html(table) if table else "<p>No finished variant has results.</p>",
        pivots="\n".join(f"<h3>{e(g.title)}</h3>\n{to_html(g)}" for g in pivots)
        or "<p>No axis has two or more labels.</p>",
        plots="\n".join(images) or "<p>No plots.</p>", failed=failed_html)


def write_report(data: SweepData, out_dir, templates: Path | str | None = None) -> dict:
    """Write OUT_DIR/report.md, OUT_DIR/report.html and OUT_DIR/plots/*.png.

    Returns {"markdown": Path, "html": Path, "plots": [Path, ...]}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = all_plots(data, out_dir / "plots")
    grids = _grids(data)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(_markdown(data, grids, plots, out_dir, templates), encoding="utf-8")
    html_path.write_text(_html(data, grids, plots, templates), encoding="utf-8")
    return {"markdown": md_path, "html": html_path, "plots": plots}
