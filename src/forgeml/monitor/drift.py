"""Has production traffic drifted away from what a model was trained on?

    drift(workspace, "support-bot@prod", since=parse_window("1h"))

Compares the drift signals the server logged for each request in a window
(forgeml.monitor.signals) with the same signals over the model's training data (its
`monitor.reference` artifact, made once per model). Each signal gets a two-sample test
and an effect size:

- numbers: Kolmogorov-Smirnov (scipy) and the population stability index (PSI) over the
  reference's deciles;
- labels: a chi-square test of the window's counts against the reference's shares, and
  the Jensen-Shannon distance (base 2) between the two distributions;
- sketches (vectors): a domain classifier (logistic regression) trained to tell window
  from reference on half of each, its AUC on the other half, and the Mann-Whitney test
  of that AUC.

A signal drifts when its difference is both significant (p below `alpha`, divided by the
number of signals tested: Bonferroni) and large enough to matter (by default PSI >= 0.2,
JS >= 0.1, the usual "significant shift" rules of thumb): significance alone flags
trivial shifts in large windows, effect size alone flags noise in small ones. The
thresholds are settings, per workspace and per model (monitor/settings.py).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from forgeml.core.errors import InputError
from forgeml.core.schema import RequestLog, utcnow
from forgeml.monitor.settings import DriftThresholds, monitoring_settings
from forgeml.monitor.signals import CATEGORICAL, LABEL_PREFIX, VECTORS
from forgeml.monitor.usage import served_names

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

_SMOOTH = 1e-4  # keeps empty bins from making PSI infinite


def drift(
    workspace: Workspace,
    model: str,
    since: datetime | None = None,
    until: datetime | None = None,
    alpha: float | None = None,
) -> dict[str, Any]:
    """Each signal's test, effect, threshold and verdict, and `drift`: any signal drifted.
    Thresholds come from forgeml.yaml's `monitoring:` (monitor/settings.py); `alpha`
    overrides its significance level."""
    thresholds = thresholds_for(workspace, model, alpha)
    since, until = check_window(since, until, timedelta(hours=1))
    artifact, reference = model_reference(workspace, model)
    window = [
        signals for _, signals in window_signals(workspace, model, artifact.ref, since, until)
    ]
    if len(window) < thresholds.min_requests:
        raise InputError(
            f"{model} answered {len(window)} logged requests between {since:%Y-%m-%d %H:%M} "
            f"and {until:%Y-%m-%d %H:%M} UTC; drift needs at least {thresholds.min_requests}",
            hint="Widen the window with --since (15m, 24h, 7d), or check the model name "
            "with `forgeml monitor usage`.",
        )
    results = compare(reference, window, thresholds)
    return {
        "model": model,
        "artifact": artifact.ref,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "requests": len(window),
        "reference": reference["summary"],
        "thresholds": thresholds.model_dump(),
        "signals": results,
        "drift": any(result["drifted"] for result in results),
        "not_measured": [r["signal"] for r in results if not r["measured"]],
    }


def thresholds_for(workspace: Workspace, model: str, alpha: float | None) -> DriftThresholds:
    """The model's thresholds from forgeml.yaml, with `alpha` (the CLI's) over them."""
    thresholds = monitoring_settings(workspace).for_model(model)
    if alpha is None:
        return thresholds
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be between 0 and 1, got {alpha}", field="--alpha")
    return thresholds.model_copy(update={"alpha": alpha})


def check_window(
    since: datetime | None, until: datetime | None, default: timedelta
) -> tuple[datetime, datetime]:
    until = until or utcnow()
    since = since or until - default
    if since >= until:
        raise InputError("the window is empty: --since must come before --until", field="--since")
    return since, until


def model_reference(workspace: Workspace, model: str) -> tuple[Any, dict[str, Any]]:
    """The model's artifact and its drift reference (made by `monitor.reference` once)."""
    from forgeml.core.runs import run_stage
    from forgeml.monitor.reference import load_reference, require_training_data

    artifact = workspace.registry.resolve(
        model, kind="model", purpose="be compared with its training data"
    )
    require_training_data(workspace, artifact)  # before a run is recorded for nothing
    made = run_stage(workspace, "monitor.reference", {}, {"model": artifact}, quiet=True)
    reference = load_reference(workspace.local_path(made.outputs["reference"]))
    reference["summary"] = {
        "artifact": made.outputs["reference"].ref,
        "kind": reference["kind"],
        "records": reference["records"],
        "datasets": reference["datasets"],
    }
    return artifact, reference


def compare(
    reference: dict[str, Any], window: list[dict[str, Any]], thresholds: DriftThresholds
) -> list[dict[str, Any]]:
    """Test each signal the reference holds against the window's values. A signal too few
    of the window's requests carry (prompt_logprob from an engine that does not compute
    it, the labels of free-text answers) is listed as not measured, never as "no drift"."""
    observed = {name: _observed(name, window) for name in reference["compared"]}
    measured = [name for name, values in observed.items() if len(values) >= thresholds.min_requests]
    alpha = thresholds.alpha / max(len(measured), 1)
    results = []
    for name, values in observed.items():
        expected = reference["signals"][name]
        if name not in measured:
            found = {
                "measured": False,
                "drifted": False,
                "reason": f"{len(values)} of the window's requests carry this signal; "
                f"at least {thresholds.min_requests} are needed",
            }
        elif name in CATEGORICAL or name.startswith(LABEL_PREFIX):
            found = _labels(expected, values, alpha, thresholds.min_js)
        elif name in VECTORS:
            found = _vectors(expected, values, alpha, thresholds.min_auc)
        else:
            found = _numbers(expected, values, alpha, thresholds.min_psi)
        results.append({"signal": name, "measured": True, **found})
    return results


def _observed(name: str, window: list[dict[str, Any]]) -> list[Any]:
    if name.startswith(LABEL_PREFIX):
        field = name[len(LABEL_PREFIX) :]
        return [row["labels"][field] for row in window if field in (row.get("labels") or {})]
    return [row[name] for row in window if name in row]


def window_signals(
    workspace: Workspace, model: str, artifact_ref: str, since: datetime, until: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    """(time, signals) of the answered requests of this model version in the window."""
    query = (
        select(RequestLog.time, RequestLog.request)
        .where(
            RequestLog.time >= since,
            RequestLog.time < until,
            RequestLog.status == 200,
            RequestLog.model.in_(served_names(workspace, model)),
        )
        .order_by(RequestLog.time)
    )
    with workspace.registry.session() as session:
        return [
            (time, request["signals"])
            for time, request in session.execute(query.execution_options(yield_per=5000))
            if request.get("signals") and request.get("artifact") == artifact_ref
        ]


def _numbers(
    expected: list[float], observed: list[float], alpha: float, min_psi: float
) -> dict[str, Any]:
    reference, window = np.asarray(expected, float), np.asarray(observed, float)
    from scipy import stats  # on use: ~60 MB a server that never computes drift skips

    result = stats.ks_2samp(reference, window)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, 11)))
    psi = 0.0
    if len(edges) > 1:
        bins = np.concatenate(([-np.inf], edges[1:-1], [np.inf]))
        ref_share = np.histogram(reference, bins)[0] / len(reference) + _SMOOTH
        win_share = np.histogram(window, bins)[0] / len(window) + _SMOOTH
        psi = float(np.sum((win_share - ref_share) * np.log(win_share / ref_share)))
    return {
        "test": "ks",
        "statistic": round(float(result.statistic), 4),
        "p_value": float(result.pvalue),
        "effect": "psi",
        "value": round(psi, 4),
        "threshold": min_psi,
        "drifted": bool(result.pvalue < alpha and psi >= min_psi),
        "reference_median": float(np.median(reference)),
        "window_median": float(np.median(window)),
    }


def _labels(
    expected: list[str], observed: list[str], alpha: float, min_js: float
) -> dict[str, Any]:
    from scipy import stats
    from scipy.spatial.distance import jensenshannon

    ref_counts, win_counts = Counter(expected), Counter(observed)
    labels = sorted(set(ref_counts) | set(win_counts))
    ref_share = np.array([ref_counts[label] for label in labels], float) + _SMOOTH
    ref_share /= ref_share.sum()
    win = np.array([win_counts[label] for label in labels], float)
    p_value = 1.0
    if len(labels) > 1:
        p_value = float(stats.chisquare(win, ref_share * win.sum()).pvalue)
    js = float(jensenshannon(ref_share, win / win.sum(), base=2))
    return {
        "test": "chi2",
        "p_value": p_value,
        "effect": "jensen_shannon",
        "value": round(js, 4),
        "threshold": min_js,
        "drifted": bool(p_value < alpha and js >= min_js),
        "reference_top": [label for label, _ in ref_counts.most_common(3)],
        "window_top": [label for label, _ in win_counts.most_common(3)],
    }


_CLASSIFIER_ROWS = 1000  # per side: enough for a stable AUC, bounded cost


def _vectors(
    expected: list[list[int]], observed: list[list[int]], alpha: float, min_auc: float
) -> dict[str, Any]:
    """Can a classifier tell the window's sketches from the reference's? Held-out AUC."""
    rng = np.random.default_rng(0)
    reference = np.asarray(expected, float)[rng.permutation(len(expected))[:_CLASSIFIER_ROWS]]
    window = np.asarray(observed, float)[rng.permutation(len(observed))[:_CLASSIFIER_ROWS]]
    features = np.vstack([reference, window]) / 127.0
    labels = np.concatenate([np.zeros(len(reference)), np.ones(len(window))])
    fit, held = [], []
    for side in (0, 1):  # half of each side to train on, the other half to score
        rows = rng.permutation(np.flatnonzero(labels == side))
        fit.append(rows[: len(rows) // 2])
        held.append(rows[len(rows) // 2 :])
    fit_rows, held_rows = np.concatenate(fit), np.concatenate(held)
    weights = _logistic_regression(features[fit_rows], labels[fit_rows])
    scores = features[held_rows] @ weights[:-1] + weights[-1]
    positive, negative = scores[labels[held_rows] == 1], scores[labels[held_rows] == 0]
    auc, p_value = 0.5, 1.0
    if len(positive) and len(negative):
        from scipy import stats

        test = stats.mannwhitneyu(positive, negative, alternative="greater")
        auc, p_value = float(test.statistic) / (len(positive) * len(negative)), float(test.pvalue)
    return {
        "test": "domain classifier",
        "p_value": p_value,
        "effect": "auc",
        "value": round(auc, 4),
        "threshold": min_auc,
        "drifted": bool(p_value < alpha and auc >= min_auc),
    }


def _logistic_regression(features: np.ndarray, labels: np.ndarray, steps: int = 300) -> np.ndarray:
    """Class-balanced, L2-regularised logistic regression by gradient descent; weights + bias."""
    rows = np.hstack([features, np.ones((len(features), 1))])
    balance = np.where(labels == 1, 0.5 / max(labels.sum(), 1), 0.5 / max((1 - labels).sum(), 1))
    weights = np.zeros(rows.shape[1])
    for _ in range(steps):
        predicted = 1.0 / (1.0 + np.exp(-np.clip(rows @ weights, -30, 30)))
        weights -= 1.0 * (rows.T @ ((predicted - labels) * balance) + 1e-3 * weights)
    return weights
