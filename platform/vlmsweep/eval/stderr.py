"""Standard errors for benchmark scores, from a scored result's per-item rows.

`add_stderr(name, scored)` adds the result's "stderr": {metric: standard error} for each metric it
can derive from the result's "items" (flat_metrics turns them into <bench>/<metric>_stderr, which
MLflow gets as eval/<bench>/<metric>_stderr):

  - a proportion (0/1 per item, reported as a percentage over n items): the analytic
    100 * sqrt(p (1 - p) / n); a per-item score in 0..1 (VQA / TextVQA soft accuracy, MM-Vet
    grades): the standard error of the mean, 100 * std(ddof=1) / sqrt(n);
  - a composite (POPE precision / recall / F1, MME subtask scores and perception / cognition
    totals): item-level bootstrap, stratified by POPE split / MME subtask, 1000 resamples from
    a fixed seed (the same result always gets the same stderr);
  - MME acc+ (and the scores built on it) resample images, not questions: an image's two
    questions stay together;
  - a mean over POPE's splits of per-split proportions: sqrt(sum se_s^2) / S.

`paired_stderr` is the standard error of the difference between two variants over the items
both answered, for scores that are per-item means (the report's "beyond noise" test).
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict

import numpy as np

RESAMPLES = 1000
SEED = 20_241_129
Z = 2.0   # a difference "exceeds the noise" when |diff| > Z * its stderr

__all__ = ["RESAMPLES", "Z", "add_stderr", "bootstrap_stderr", "exceeds_noise", "item_key", "item_values",
           "mean_stderr", "paired_stderr", "proportion_stderr", "stderr_metrics"]


def proportion_stderr(p_pct: float, n: int, scale: float = 100.0) -> float:
    """Analytic stderr of a proportion given in `scale` units (100: a percentage) over n items."""
    if n <= 0:
        return 0.0
    p = min(max(p_pct / scale, 0.0), 1.0)
    return scale * math.sqrt(p * (1 - p) / n)


def mean_stderr(values, scale: float = 100.0) -> float:
    """Stderr of the mean of per-item values: the analytic proportion one when they are all 0/1,
    else std(ddof=1) / sqrt(n); times `scale`."""
    x = np.asarray([float(v) for v in values], dtype=float)
    if len(x) == 0:
        return 0.0
    if np.all((x == 0) | (x == 1)):
        return proportion_stderr(scale * x.mean(), len(x), scale)
    return float(scale * x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def bootstrap_stderr(sizes: list[int], statistic, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Stderr(s) of `statistic` under a stratified bootstrap: stratum s (of sizes[s] units) is
    resampled with replacement; statistic(indices) gets one (resamples, sizes[s]) index array per
    stratum and returns (resamples,) or (resamples, k) values. Deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, n, size=(resamples, n)) if n else np.zeros((resamples, 0), int) for n in sizes]
    values = np.asarray(statistic(idx), dtype=float)
    return values.std(axis=0, ddof=1)


def _seed(name: str) -> int:
    return SEED + zlib.crc32(name.encode())


def _correct(items) -> list[float]:
    return [float(i["correct"]) for i in items]


def _by(items, field) -> dict:
    out = defaultdict(list)
    for i in items:
        if i.get(field) is not None:
            out[i[field]].append(i)
    return out


# ---- per benchmark ---------------------------------------------------------------------------

def _pope(items) -> dict:
    from .benchmarks.pope.layout import SPLITS

    splits = _by(items, "split")
    order = [s for s in SPLITS if s in splits] + sorted(set(splits) - set(SPLITS))
    out, se_acc, se_yes = {}, [], []
    yes, lab = {}, {}
    for s in order:
        rows = splits[s]
        yes[s] = np.array([r["parsed"] == "yes" for r in rows])
        lab[s] = np.array([r["answer"] == "yes" for r in rows])
        acc = proportion_stderr(100 * np.mean(yes[s] == lab[s]), len(rows))
        ratio = proportion_stderr(float(np.mean(yes[s])), len(rows), scale=1.0)
        out[f"{s}/accuracy"], out[f"{s}/yes_ratio"] = acc, ratio
        se_acc.append(acc)
        se_yes.append(ratio)
    if not order:
        return out
    out["accuracy"] = math.sqrt(sum(v * v for v in se_acc)) / len(order)
    out["yes_ratio"] = math.sqrt(sum(v * v for v in se_yes)) / len(order)

    def stat(idx):
        cols = []
        for s, i in zip(order, idx):
            y, t = yes[s][i], lab[s][i]
            tp, fp, fn = (y & t).sum(1), (y & ~t).sum(1), (~y & t).sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                p = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
                r = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
                f = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)
            cols += [100 * f, 100 * p, 100 * r]
        per = np.stack(cols, axis=1)                       # (B, 3 * splits)
        mean = per.reshape(len(per), len(order), 3).mean(axis=1)
        return np.concatenate([per, mean], axis=1)

    se = bootstrap_stderr([len(splits[s]) for s in order], stat, seed=_seed("pope"))
    for k, s in enumerate(order):
        out[f"{s}/f1"], out[f"{s}/precision"], out[f"{s}/recall"] = se[3 * k: 3 * k + 3]
    out["f1"], out["precision"], out["recall"] = se[-3:]
    return {k: float(v) for k, v in out.items()}


def _mme(items) -> dict:
    from .benchmarks.mme.score import COGNITION, PERCEPTION

    subs = _by(items, "subtask")
    names = list(subs)
    out, right, asked, full = {}, {}, {}, {}
    for sub in names:
        images = defaultdict(list)   # MME repeats the image path as the question_id of its questions
        for r in subs[sub]:
            images[str(r["question_id"])].append(bool(r["correct"]))
        right[sub] = np.array([sum(v) for v in images.values()], dtype=float)
        asked[sub] = np.array([len(v) for v in images.values()], dtype=float)
        full[sub] = np.array([all(v) for v in images.values()], dtype=float)
        out[f"{sub}/acc"] = mean_stderr(_correct(subs[sub]))

    def stat(idx):
        cols = []
        for sub, i in zip(names, idx):
            acc = 100 * right[sub][i].sum(1) / np.maximum(asked[sub][i].sum(1), 1)
            plus = 100 * full[sub][i].mean(1)
            cols += [plus, acc + plus]
        per = np.stack(cols, axis=1)
        groups = []
        for group in (PERCEPTION, COGNITION):
            ks = [k for k, sub in enumerate(names) if sub in group]
            groups.append(per[:, [2 * k + 1 for k in ks]].sum(1) if ks else np.zeros(len(per)))
        return np.concatenate([per, np.stack(groups, axis=1)], axis=1)

    se = bootstrap_stderr([len(full[s]) for s in names], stat, seed=_seed("mme"))
    for k, sub in enumerate(names):
        out[f"{sub}/acc+"], out[sub] = float(se[2 * k]), float(se[2 * k + 1])
    out["perception"], out["cognition"] = float(se[-2]), float(se[-1])
    return out


def stderr_metrics(name: str, scored: dict) -> dict[str, float]:
    """{metric: stderr} for the metrics of `scored` (a benchmark's result) that have one."""
    items, metrics = scored.get("items") or [], scored.get("metrics") or {}
    if scored.get("skipped") or not items:
        return {}
    out: dict[str, float] = {}
    if name == "pope":
        out = _pope(items)
    elif name == "mme":
        out = _mme(items)
    else:
        head = "total" if name == "mmvet" else "accuracy"
        out[head] = mean_stderr(_correct(items))
        if name == "gqa":
            out["open"] = mean_stderr(_correct(i for i in items if i.get("structural") == "query"))
            out["binary"] = mean_stderr(_correct(i for i in items if i.get("structural") != "query"))
        elif name == "scienceqa":
            out["img_accuracy"] = mean_stderr(_correct(i for i in items if i.get("image")))
        elif name == "mmmu":
            from .benchmarks.mmmu.layout import subject_of

            for subject, rows in _by([{**i, "subject": subject_of(i["question_id"])} for i in items],
                                     "subject").items():
                out[f"subject/{subject}"] = mean_stderr(_correct(rows))
        elif name == "vqav2":   # per answer type, where the rows carry it
            out.update({t: mean_stderr(_correct(rows)) for t, rows in _by(items, "answer_type").items()})
        elif name == "mmvet":   # per capability, where the rows carry them
            caps = defaultdict(list)
            for i in items:
                for c in i.get("capability") or []:
                    caps[c].append(i)
            out.update({c: mean_stderr(_correct(rows)) for c, rows in caps.items()})
    return {k: v for k, v in out.items() if k in metrics}


def add_stderr(name: str, scored: dict) -> dict:
    """`scored` with its "stderr": {metric: standard error} (in place; returned for chaining).
    They sit beside "metrics", not in it, so a result's metrics stay exactly the official
    script's numbers; flat_metrics logs each as <bench>/<metric>_stderr."""
    scored["stderr"] = stderr_metrics(name, scored)
    return scored


# ---- differences between variants ------------------------------------------------------------

def item_key(item: dict) -> str:
    """One question's identity across variants (MME has two questions per question_id)."""
    parts = [str(item.get("question_id"))] + [str(item[f]) for f in ("question", "split") if item.get(f) is not None]
    return "|".join(parts)


def item_values(name: str, metric: str, items: list[dict]) -> dict[str, float] | None:
    """{item key: its contribution x 100} when `metric` is the mean of per-item scores over all
    items (accuracy, MM-Vet's total), so a paired difference is meaningful; else None (composites)."""
    if not items or name in ("pope", "mme") or metric != ("total" if name == "mmvet" else "accuracy"):
        return None
    return {item_key(i): 100.0 * float(i["correct"]) for i in items}


def paired_stderr(a: dict[str, float], b: dict[str, float]) -> tuple[float, float, int]:
    """(mean of a - b, its stderr, n) over the items both have."""
    common = [k for k in a if k in b]
    if not common:
        return 0.0, float("nan"), 0
    d = np.array([a[k] - b[k] for k in common])
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se, len(d)


def exceeds_noise(diff: float, se: float) -> bool | None:
    """|diff| > Z * se; None when the stderr is unknown."""
    if se is None or math.isnan(se):
        return None
    return abs(diff) > Z * se if se > 0 else diff != 0
