"""Prometheus metrics: `GET /metrics` (admin scope) in the text exposition format.

    forgeml_requests_total{route,status,model}          every HTTP request
    forgeml_request_duration_seconds{route,model}       until the last byte (streams too)
    forgeml_time_to_first_token_seconds{model}          request received -> first token
    forgeml_prompt_tokens_total / forgeml_generated_tokens_total{model}
    forgeml_tokens_per_second{model}                    engine output over the last 5 s
    forgeml_queue_depth{model} / forgeml_running_sequences{model}

Per version, to compare a canary with prod (traffic.py; `traffic` is live or shadow):

    forgeml_version_requests_total{model,version,alias,traffic,status}
    forgeml_version_errors_total{model,version,alias,traffic}           status >= 400
    forgeml_version_request_duration_seconds{model,version,alias,traffic}
    forgeml_version_tokens_total{model,version,alias,traffic,kind}      prompt | completion
    forgeml_shadow_copies_total{model,outcome}         queued, dropped, answered, failed

Each app has its own `CollectorRegistry`, so several servers (tests) in one process
do not share counts. Request counting is plain ASGI middleware: it sees the status of
streamed responses and their full duration, which `BaseHTTPMiddleware` would not.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from forgeml.serve.served_models import ModelPool
    from forgeml.serve.traffic import Route

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "forgeml_requests", "HTTP requests.", ["route", "status", "model"], registry=r
        )
        self.latency = Histogram(
            "forgeml_request_duration_seconds",
            "Time to answer a request, streams until their last byte.",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "forgeml_time_to_first_token_seconds",
            "Time from receiving a generation request to its first token.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "forgeml_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r
        )
        self.generated_tokens = Counter(
            "forgeml_generated_tokens", "Completion tokens generated.", ["model"], registry=r
        )
        self.tokens_per_second = Gauge(
            "forgeml_tokens_per_second",
            "Generated tokens per second (5 s window).",
            ["model"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "forgeml_queue_depth", "Requests waiting for a batch slot.", ["model"], registry=r
        )
        self.running = Gauge(
            "forgeml_running_sequences", "Sequences in the decoding batch.", ["model"], registry=r
        )
        self.finish_reasons = Counter(
            "forgeml_finish_reasons",
            "Answered choices by how they ended (stop, length, tool_calls, ...).",
            ["model", "reason"],
            registry=r,
        )
        self.json_answers = Counter(
            "forgeml_json_answers",
            "Answers asked for as JSON (response_format), by whether every choice parsed.",
            ["model", "valid"],
            registry=r,
        )
        self.feedback = Counter(
            "forgeml_feedback",
            "Feedback received, by rating (1-5, or none).",
            ["model", "rating"],
            registry=r,
        )
        self.drift_effect = Gauge(
            "forgeml_drift_effect",
            "Effect size (PSI or Jensen-Shannon) of each drift signal in the last check.",
            ["model", "signal"],
            registry=r,
        )
        self.drift_alert = Gauge(
            "forgeml_drift_alert",
            "1 while a model's recent traffic has drifted.",
            ["model"],
            registry=r,
        )

        version = ["model", "version", "alias", "traffic"]
        self.version_requests = Counter(
            "forgeml_version_requests",
            "Generation requests by the model version that answered and the alias it was "
            "reached through.",
            [*version, "status"],
            registry=r,
        )
        self.version_errors = Counter(
            "forgeml_version_errors",
            "Generation requests a version answered with an error (status 400 or more).",
            version,
            registry=r,
        )
        self.version_latency = Histogram(
            "forgeml_version_request_duration_seconds",
            "Time to answer a generation request, by version and alias.",
            version,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.version_tokens = Counter(
            "forgeml_version_tokens",
            "Prompt and completion tokens by version and alias.",
            [*version, "kind"],
            registry=r,
        )
        self.shadow_copies = Counter(
            "forgeml_shadow_copies",
            "Copies of requests for a shadowed candidate: queued, dropped (queue full), "
            "answered, failed.",
            ["model", "outcome"],
            registry=r,
        )

    def version_request(self, route: Route, status: int, seconds: float) -> None:
        labels = (route.name, route.version, route.alias, route.traffic)
        self.version_requests.labels(*labels, str(status)).inc()
        if status >= 400:
            self.version_errors.labels(*labels).inc()
        self.version_latency.labels(*labels).observe(seconds)

    def version_usage(self, route: Route, prompt_tokens: int, tokens: int) -> None:
        labels = (route.name, route.version, route.alias, route.traffic)
        self.version_tokens.labels(*labels, "prompt").inc(prompt_tokens)
        self.version_tokens.labels(*labels, "completion").inc(tokens)

    def completion(self, model: str, ttft: float | None, prompt_tokens: int, tokens: int) -> None:
        if ttft is not None:
            self.ttft.labels(model).observe(ttft)
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.generated_tokens.labels(model).inc(tokens)

    def render(self, pool: ModelPool) -> bytes:
        for served in pool.models:
            stats = served.engine.stats()
            self.tokens_per_second.labels(served.id).set(stats.tokens_per_second)
            self.queue_depth.labels(served.id).set(stats.waiting)
            self.running.labels(served.id).set(stats.running)
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Counts every request by route template, status and model (set by the handler)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            route = scope.get("route") or _route_of(scope)  # guard.py refusals never route
            path = getattr(route, "path", None) or "unmatched"
            state = scope.get("state", {})
            model, seconds = state.get("model", ""), time.perf_counter() - start
            self.metrics.requests.labels(path, str(status), model).inc()
            self.metrics.latency.labels(path, model).observe(seconds)
            if (route := state.get("route")) is not None:  # a generation request (traffic.py)
                self.metrics.version_request(route, status, seconds)


def _route_of(scope: Scope):
    """The route a request was for, found by its path (a template: labels stay bounded)."""
    app = scope.get("app")
    return _matching(getattr(getattr(app, "router", None), "routes", ()), scope)


def _matching(routes, scope: Scope):
    for route in routes:
        included = getattr(route, "original_router", None)  # newer FastAPI's include_router
        if included is not None:
            found = _matching(included.routes, scope)
            if found is not None:
                return found
        elif getattr(route, "path", None) and route.matches(scope)[0] is Match.FULL:
            return route
    return None
