"""Production usage from the registry's request log: what each model did in a window.

    usage(workspace, model="support-bot", since=parse_window("7d"), by="key")

One row per group (the model, or each key, day, version or alias of it; `version` and
`alias` compare a canary with prod: the version that answered, NAME:N, and the alias
the request reached it through, as the server recorded them): requests, their outcomes
(ok, client errors, 429s, server errors), tokens in and out, latency and time-to-first-
token percentiles, finish reasons (tool calls among them), how often answers asked for
as JSON parsed, and the feedback the completions got. Reads only the columns it needs, a batch at a time, so a window of
millions of requests does not load the log into memory.
"""

from __future__ import annotations

import re
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select

from forgeml.core.errors import InputError, NotFoundError
from forgeml.core.schema import ApiKey, Feedback, RequestLog, Version, utcnow

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

GROUPINGS = ("model", "key", "day", "version", "alias")
_WINDOW = re.compile(r"^(\d{1,6})([mhdw])$")
_UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_BATCH = 5000


def parse_window(text: str, now: datetime | None = None) -> datetime:
    """`15m`, `24h`, `7d`, `2w` back from now, or an ISO date/time (UTC unless given)."""
    now = now or utcnow()
    if match := _WINDOW.match(text.strip()):
        return now - timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"{text!r} is not a time window",
            field="--since",
            hint="Use a span back from now (15m, 24h, 7d, 2w) or an ISO date (2026-12-01).",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class _Group:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: array = field(default_factory=lambda: array("d"))  # 8 bytes a request
    ttft_ms: array = field(default_factory=lambda: array("d"))
    finish_reasons: Counter = field(default_factory=Counter)
    feedback: int = 0
    rated: int = 0
    rating_sum: float = 0.0
    json_requests: int = 0  # answered requests that asked for JSON (response_format)
    json_valid: int = 0  # ... whose every choice parsed

    def add(self, row: Any, feedback: tuple[int, int, float] | None) -> None:
        self.requests += 1
        self.statuses[row.status] += 1
        self.prompt_tokens += row.prompt_tokens or 0
        self.completion_tokens += row.completion_tokens or 0
        self.latency_ms.append(row.latency_ms or 0.0)
        if row.ttft_ms is not None:
            self.ttft_ms.append(row.ttft_ms)
        if row.finish_reason:
            self.finish_reasons[row.finish_reason] += 1
        checked = ((row.request or {}).get("signals") or {}).get("json_valid")
        if checked is not None:
            self.json_requests += 1
            self.json_valid += bool(checked)
        if feedback:
            self.feedback += feedback[0]
            self.rated += feedback[1]
            self.rating_sum += feedback[2]

    def summary(self) -> dict[str, Any]:
        ok = sum(n for status, n in self.statuses.items() if 200 <= status < 300)
        throttled = self.statuses.get(429, 0)
        server_errors = sum(n for status, n in self.statuses.items() if status >= 500)
        client_errors = self.requests - ok - server_errors - throttled
        return {
            "requests": self.requests,
            "ok": ok,
            "client_errors": client_errors,
            "rate_limited": throttled,
            "server_errors": server_errors,
            "error_rate": round((server_errors + client_errors) / self.requests, 4),
            "rate_limited_rate": round(throttled / self.requests, 4),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms": _percentiles(self.latency_ms),
            "ttft_ms": _percentiles(self.ttft_ms),
            "finish_reasons": dict(self.finish_reasons.most_common()),
            "tool_call_rate": round(self.finish_reasons.get("tool_calls", 0) / max(ok, 1), 4),
            "json_requests": self.json_requests,
            "json_valid_rate": (
                round(self.json_valid / self.json_requests, 4) if self.json_requests else None
            ),
            "feedback": {
                "count": self.feedback,
                "rated": self.rated,
                "mean_rating": round(self.rating_sum / self.rated, 3) if self.rated else None,
            },
        }


def _percentiles(values: array) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 90, 99])
    return {"p50": round(float(p50), 1), "p90": round(float(p90), 1), "p99": round(float(p99), 1)}


def served_names(workspace: Workspace, model: str) -> list[str]:
    """The ids a model is logged under: as given, and NAME@ALIAS / NAME:N forms of NAME."""
    name = re.split(r"[@:]", model, maxsplit=1)[0]
    with workspace.registry.session() as session:
        known = session.scalar(select(func.count()).where(Version.name == name))
        logged = session.scalars(
            select(RequestLog.model)
            .where(
                (RequestLog.model == name)
                | RequestLog.model.like(f"{name}@%")
                | RequestLog.model.like(f"{name}:%")
            )
            .distinct()
        ).all()
    if model != name:
        return [model]
    if not known and not logged:
        raise NotFoundError(
            f"no model named {model!r} in the registry or the request log",
            hint="See `forgeml models list`; the log names models as they were served.",
        )
    return sorted({name, *logged})


def usage(
    workspace: Workspace,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    by: str = "model",
) -> dict[str, Any]:
    """Usage per group in [since, until); see the module docstring."""
    if by not in GROUPINGS:
        raise InputError(
            f"cannot group by {by!r}", field="--by", hint=f"One of: {', '.join(GROUPINGS)}."
        )
    until = until or utcnow()
    since = since or until - timedelta(days=7)
    if since >= until:
        raise InputError("the window is empty: --since must come before --until", field="--since")
    query = select(
        RequestLog.completion_id, RequestLog.time, RequestLog.model, RequestLog.status,
        RequestLog.api_key_id, RequestLog.prompt_tokens, RequestLog.completion_tokens,
        RequestLog.latency_ms, RequestLog.ttft_ms, RequestLog.finish_reason, RequestLog.request,
        RequestLog.version, RequestLog.alias,
    ).where(RequestLog.time >= since, RequestLog.time < until)  # fmt: skip
    names = served_names(workspace, model) if model else None
    if names:
        query = query.where(RequestLog.model.in_(names))
    groups: dict[str, _Group] = defaultdict(_Group)
    with workspace.registry.session() as session:
        key_names = {
            row.id: f"{row.name} ({row.prefix})" for row in session.scalars(select(ApiKey))
        }
        feedback = _feedback_by_completion(session, since)
        for row in session.execute(query.execution_options(yield_per=_BATCH)):
            groups[_group_of(row, by, key_names)].add(row, feedback.get(row.completion_id))
    return {
        "model": model,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "by": by,
        "groups": {name: groups[name].summary() for name in sorted(groups)},
    }


def _group_of(row: Any, by: str, key_names: dict[int, str]) -> str:
    if by == "key":
        return key_names.get(row.api_key_id, "(no key)")
    if by == "day":
        return row.time.strftime("%Y-%m-%d")
    if by == "version":  # rows logged before versions were recorded: the model as served
        return row.version or f"{row.model} (version not recorded)"
    if by == "alias":
        return f"@{row.alias}" if row.alias else "(no alias)"
    return row.model


def _feedback_by_completion(session: Any, since: datetime) -> dict[str, tuple[int, int, float]]:
    """completion id -> (feedback rows, rated rows, sum of ratings), for feedback given since."""
    totals: dict[str, tuple[int, int, float]] = {}
    query = select(Feedback.completion_id, Feedback.rating).where(Feedback.created_at >= since)
    for completion_id, rating in session.execute(query.execution_options(yield_per=_BATCH)):
        n, rated, total = totals.get(completion_id, (0, 0, 0.0))
        totals[completion_id] = (n + 1, rated + (rating is not None), total + (rating or 0))
    return totals
