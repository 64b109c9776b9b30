"""A running server stops serving a model within seconds of `forgeml data forget`.

Requests resolve names through the registry with `purpose`, so a model not yet held is
refused at once. A model already held is checked here: once a second, one query asks
which held artifacts are forgotten, and those are withdrawn from the pool (engine
stopped, gone from /v1/models); a request naming one then gets 409 with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forgeml.serve.served_models import ModelPool

log = logging.getLogger("forgeml.serve")

POLL_SECONDS = 1.0


async def withdraw_forgotten(pool: ModelPool, interval: float = POLL_SECONDS) -> None:
    """Run for the server's life (ModelPool.start starts it, stop cancels it)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await withdraw_once(pool)
        except Exception:  # a busy or restarting database must not end the watch
            log.warning("could not check for forgotten models", exc_info=True)


async def withdraw_once(pool: ModelPool) -> list[str]:
    """Withdraw every held model (or adapter on a base) that is forgotten; their ids."""
    held = pool.models
    ids = {s.artifact_id for s in held} | {s.parent.artifact_id for s in held if s.parent}
    forgotten = await asyncio.to_thread(pool.workspace.registry.forgotten_among, ids)
    withdrawn = []
    for served in held:
        reason = forgotten.get(served.artifact_id)
        if reason is None and served.parent is not None:
            reason = forgotten.get(served.parent.artifact_id)
        if reason is not None:
            log.warning("%s (%s) is forgotten (%s): no longer served", served.id,
                        served.artifact_ref, reason)  # fmt: skip
            await pool.withdraw(served, reason)
            withdrawn.append(served.id)
    return withdrawn
