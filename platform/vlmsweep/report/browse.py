"""The MLflow UI link that opens on one sweep's variants side by side.

MLflow's experiment page ("Training runs" tab) restores a *saved view* named in its URL:
`#/experiments/<id>/runs?viewStateShareKey=<key>` reads the experiment tag
`mlflow.sharedViewState.<key>`, an envelope {name, createdAt, updatedAt, state} whose `state`
is a JSON string of the page's search facets (searchFilter, orderByKey, orderByAsc) and table
state (selectedColumns, columnOrder, columnWidths). It is what the page's own "Views" menu
saves and lists (MLflow 3.x; written against 3.17's UI), so the sweep's view is also listed
there by name.

The view written here: the sweep's variant runs (children of its sweep run) as rows, their
axes (tags axis.<name>) and headline benchmark scores (metrics eval/<bench>/<metric>) as
columns, then the scores' standard errors and chance levels where those were logged
(..._stderr, ..._chance), best first on the first score. Runs of other sweeps, stage runs
and earlier attempts of a re-run variant are filtered out. The UI still adds its fixed
columns (Created, with the run's status, and Duration).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from .collect import AXIS, KIND, PARENT, SweepData
from .tables import CHANCE, STDERR, benchmarks

SHARED_VIEW = "mlflow.sharedViewState."    # MLflow UI's tag prefix for saved views (experiment tags)
LOCAL_UI = "http://127.0.0.1:5000"         # where `mlflow ui` serves a local store by default
MAX_IDS = 300                              # a run-id filter longer than this falls back to the parent filter

log = logging.getLogger(__name__)


@dataclass
class SweepView:
    key: str            # the viewStateShareKey
    name: str           # as the "Views" menu lists it
    url: str            # the page, on the UI that serves this tracking store
    serve: str | None   # the command that starts that UI, when the store is not a server itself


def _col(kind: str, key: str) -> str:
    """A runs-table column id as the UI writes it: metrics.`eval/gqa/accuracy`, tags.`axis.llm`."""
    return f"{kind}.`{key}`"


def score_keys(data: SweepData) -> list[str]:
    """The view's score columns: the report's headline benchmarks; without any, each stage's final loss."""
    keys = [key for _, key in benchmarks(data)]
    if not keys:
        keys = sorted(c for c in data.variants.columns if str(c).endswith("/final_loss"))
    return keys


def score_columns(data: SweepData) -> list[str]:
    """score_keys, then their stderrs, then their chance levels, where some variant logged them.
    The UI shows one metric per column and draws only the columns within the window, so every
    benchmark's score comes first, and "± stderr" and chance follow to the right."""
    companions = [key + suffix for suffix in (STDERR, CHANCE) for key in score_keys(data)]
    return score_keys(data) + [c for c in companions if c in data.variants and data.variants[c].notna().any()]


def _filter(client, data: SweepData) -> str:
    """The variant runs the report shows: by parent run, or by run id where a re-run variant left
    an earlier attempt under the same parent."""
    from .collect import _q, _search

    parent = f"tags.`{PARENT}` = {_q(data.sweep_run_id)} and tags.`{KIND}` = 'variant'"
    ids = list(data.variants["run_id"]) if "run_id" in data.variants else []
    under = _search(client, data.sweep_run.info.experiment_id, parent)
    if len(under) > len(ids) and 0 < len(ids) <= MAX_IDS:
        return f"attributes.run_id IN ({', '.join(_q(i) for i in ids)})"
    return parent


def view_state(data: SweepData, search_filter: str) -> dict:
    """The page state: rows = the sweep's variants, columns = axes then scores."""
    axes = [_col("tags", AXIS + a) for a in data.axes]
    scores = [_col("metrics", k) for k in score_columns(data)]
    state = {"searchFilter": search_filter, "orderByAsc": not scores,
             "orderByKey": scores[0] if scores else _col("tags", "mlflow.runName"),
             "selectedColumns": axes + scores,
             "columnOrder": [_col("attributes", "Run Name"), *axes, *scores],
             # wide enough for the metric's name (~7 px a character), no wider: ag-grid draws only
             # the columns within the window
             "columnWidths": {_col("metrics", k): max(110, 7 * len(k) + 30) for k in score_columns(data)}}
    return state


def ui_base(tracking_uri: str) -> tuple[str | None, str | None]:
    """(the UI's base URL, the command that starts it) for a tracking store: a tracking server
    is its own UI; a database or file store is served by `mlflow ui` (127.0.0.1:5000)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/"), None
    if tracking_uri.startswith(("databricks", "uc:")):
        return None, None
    return LOCAL_UI, f"mlflow ui --backend-store-uri {tracking_uri}"


def save_view(data: SweepData) -> SweepView | None:
    """Write (or refresh) the sweep's saved view in its experiment; the link that opens it, or
    None where the store has no UI to link to."""
    from mlflow.tracking import MlflowClient

    base, serve = ui_base(data.tracking_uri)
    if base is None:
        return None
    client = MlflowClient(data.tracking_uri)
    eid = data.sweep_run.info.experiment_id
    key = f"vlmsweep-{data.sweep_run_id}"
    name = f"sweep {data.sweep_name} ({data.sweep_run_id[:8]})"
    now = int(time.time() * 1000)
    created = now
    old = client.get_experiment(eid).tags.get(SHARED_VIEW + key)
    if old:
        try:
            created = int(json.loads(old)["createdAt"])
        except (ValueError, KeyError, TypeError):
            pass
    state = view_state(data, _filter(client, data))
    client.set_experiment_tag(eid, SHARED_VIEW + key, json.dumps(
        {"name": name, "createdAt": created, "updatedAt": now, "state": json.dumps(state)}))
    return SweepView(key, name, f"{base}/#/experiments/{eid}/runs?viewStateShareKey={key}", serve)
