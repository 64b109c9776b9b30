"""A drift report over time: the window cut into buckets, each tested like `monitor drift`.

    report = drift_report(workspace, "support-bot@prod", since, until)
    html = render_html(report)      # one self-contained page, opens from disk

For each signal the page draws its effect size (PSI or Jensen-Shannon) per bucket
against the threshold band, lists the buckets that drifted with the signals that moved,
and summarises them by their signals (medians, top languages), never by prompt text.
Buckets with fewer than `min_requests` answered requests are shown as too small to test
rather than as "no drift".
"""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from typing import TYPE_CHECKING, Any

from forgeml.core.errors import InputError
from forgeml.monitor.drift import (
    check_window,
    compare,
    model_reference,
    thresholds_for,
    window_signals,
)

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

MAX_BUCKETS = 200
WIDTH, HEIGHT, PAD = 720, 170, 36


def drift_report(
    workspace: Workspace,
    model: str,
    since: datetime | None = None,
    until: datetime | None = None,
    buckets: int = 24,
    alpha: float | None = None,
) -> dict[str, Any]:
    if not 1 <= buckets <= MAX_BUCKETS:
        raise InputError(f"buckets must be 1..{MAX_BUCKETS}, got {buckets}", field="--buckets")
    thresholds = thresholds_for(workspace, model, alpha)
    since, until = check_window(since, until, timedelta(days=30))
    artifact, reference = model_reference(workspace, model)
    rows = window_signals(workspace, model, artifact.ref, since, until)
    if not rows:
        raise InputError(
            f"{model} has no logged requests with drift signals between "
            f"{since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC",
            hint="Widen the window with --since, or check the name with `forgeml monitor usage`.",
        )
    width = (until - since) / buckets
    grouped: list[list[dict[str, Any]]] = [[] for _ in range(buckets)]
    for time, signals in rows:
        moment = time if time.tzinfo else time.replace(tzinfo=since.tzinfo)
        grouped[min(int((moment - since) / width), buckets - 1)].append(signals)
    results = []
    for index, window in enumerate(grouped):
        start = since + index * width
        entry: dict[str, Any] = {
            "start": start.isoformat(),
            "end": (start + width).isoformat(),
            "requests": len(window),
            "signals": None,
            "drift": None,
        }
        if len(window) >= thresholds.min_requests:
            entry["signals"] = compare(reference, window, thresholds)
            entry["drift"] = any(s["drifted"] for s in entry["signals"])
        results.append(entry)
    return {
        "model": model,
        "artifact": artifact.ref,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "requests": len(rows),
        "reference": reference["summary"],
        "alpha": thresholds.alpha,
        "min_requests": thresholds.min_requests,
        "buckets": results,
        "drifted_buckets": sum(1 for bucket in results if bucket["drift"]),
        "drift": any(bucket["drift"] for bucket in results),
    }


def _chart(report: dict[str, Any], signal: str) -> str:
    """The signal's effect per bucket as a line, the threshold as a shaded band above it."""
    points = []
    threshold = None
    for index, bucket in enumerate(report["buckets"]):
        found = next((s for s in bucket["signals"] or [] if s["signal"] == signal), None)
        if found is not None and found["measured"]:
            threshold = found["threshold"]
            points.append((index, found["value"], found["drifted"]))
    if not points:
        return f'<p class="meta">{escape(signal)}: no bucket had enough requests to test.</p>'
    top = max([value for _, value, _ in points] + [threshold * 1.5])
    n = max(len(report["buckets"]) - 1, 1)

    def x(i: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * i / n

    def y(v: float) -> float:
        return HEIGHT - PAD + (2 * PAD - HEIGHT) * v / top

    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v, _ in points)
    dots = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="4" fill="{"#cf222e" if bad else "#0969da"}">'
        f"<title>{escape(report['buckets'][i]['start'][:16])}: {v}</title></circle>"
        for i, v, bad in points
    )
    band = (
        f'<rect x="{PAD}" y="{y(top):.1f}" width="{WIDTH - 2 * PAD}" '
        f'height="{y(threshold) - y(top):.1f}" fill="#ffebe9"/>'
        f'<text x="{WIDTH - PAD}" y="{y(threshold) - 4:.1f}" text-anchor="end" '
        f'class="meta">drift above {threshold}</text>'
    )
    axis = (
        f'<text x="{PAD}" y="{HEIGHT - 8}">{escape(report["since"][:16])}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" text-anchor="end">'
        f"{escape(report['until'][:16])}</text>"
    )
    return (
        f'<svg width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(signal)}">'
        f'{band}<polyline points="{line}" fill="none" stroke="#0969da" stroke-width="2"/>'
        f"{dots}{axis}</svg>"
    )


def _drifted_rows(report: dict[str, Any]) -> str:
    rows = []
    for bucket in report["buckets"]:
        if not bucket["drift"]:
            continue
        moved = [s for s in bucket["signals"] if s["drifted"]]
        detail = "; ".join(f"{s['signal']}: {s['effect']} {s['value']}{_summary(s)}" for s in moved)
        rows.append(
            f"<tr><td>{escape(bucket['start'][:16])}</td><td>{bucket['requests']}</td>"
            f"<td>{escape(detail)}</td></tr>"
        )
    if not rows:
        return "<p>No bucket drifted.</p>"
    return "<table><tr><th>bucket start</th><th>requests</th><th>signals that moved</th></tr>" + (
        "".join(rows) + "</table>"
    )


def _summary(signal: dict[str, Any]) -> str:
    """How a drifted signal moved, from its signals alone (never prompt text)."""
    if "window_median" in signal:
        return f", median {signal['reference_median']:g} → {signal['window_median']:g}"
    if "window_top" in signal:
        return f", top {', '.join(signal['reference_top'])} → {', '.join(signal['window_top'])}"
    return " (the topic moved: a classifier tells the window from the training data)"


def render_html(report: dict[str, Any]) -> str:
    from forgeml.data.report_html import STYLE

    small = sum(1 for b in report["buckets"] if b["signals"] is None)
    reference = report["reference"]
    signals = sorted(
        {s["signal"] for b in report["buckets"] for s in b["signals"] or [] if s["measured"]},
        key=lambda name: name,
    )
    verdict = "drift" if report["drift"] else "no drift"
    charts = "".join(f"<h3>{escape(name)}</h3>{_chart(report, name)}" for name in signals)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Drift: {escape(report["model"])}</title><style>{STYLE}</style></head><body>
<h1>Drift report: {escape(report["model"])}</h1>
<p class="meta">{escape(report["artifact"])} · {escape(report["since"][:16])} to
{escape(report["until"][:16])} UTC · {report["requests"]} answered requests ·
compared with {reference["records"]} {escape(reference["kind"])} records of
{escape(", ".join(reference["datasets"]))}</p>
<div class="numbers"><div>{escape(verdict)}<span>verdict</span></div>
<div>{report["drifted_buckets"]} / {len(report["buckets"])}<span>buckets drifted</span></div>
<div>{small}<span>buckets under {report["min_requests"]} requests (not tested)</span></div></div>
<h2>Buckets that drifted</h2>{_drifted_rows(report)}
<h2>Signals over time</h2>
<p class="meta">Effect size per bucket; a bucket drifts when a signal is above its band
and its test is significant (alpha {report["alpha"]}, Bonferroni-corrected).</p>
{charts}
</body></html>
"""
