"""A request counts as in flight on its model from the moment the model is chosen.

An engine's stats count a request only once it is queued. Before that the request renders
its prompt and builds its output guide in threads, so other requests run meanwhile, and
one of them may load another model on demand and unload the least recently used idle
one. Choosing a model therefore holds it (and an adapter's base) until the request ends;
the guard middleware, which wraps every API request, runs the releases in its `finally`.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

RELEASES = "forgeml.holds"  # key in the ASGI scope's state


def hold_until_request_ends(served: Any, state: MutableMapping[str, Any]) -> None:
    """Hold `served` (and its base) until the request whose scope state this is ends."""
    held = [m for m in (served, served.parent) if m is not None]
    for model in held:
        model.holds += 1
    releases: list[Callable[[], None]] = state.setdefault(RELEASES, [])
    releases.append(lambda: _release(held))


def release_request_holds(scope: MutableMapping[str, Any]) -> None:
    for release in scope.get("state", {}).pop(RELEASES, []):
        release()


def _release(held: list[Any]) -> None:
    for model in held:
        model.holds -= 1
