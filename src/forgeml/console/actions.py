"""What every console write checks first: an admin key, and the session's CSRF token.

A form carries the session's random `csrf` field (htmx sends it as X-CSRF-Token); a
page on another site cannot read it, so it cannot forge a post even if a browser sent
the SameSite=Strict cookie. The write itself then runs `acting_as` the key, so the
audit log names the key that did it, not the server's user.
"""

from __future__ import annotations

import hmac
from contextlib import AbstractContextManager

from fastapi import Request
from starlette.exceptions import HTTPException

from forgeml.core.registry import acting_as
from forgeml.serve.auth import Caller


def actor(caller: Caller) -> str:
    return f"{caller.name} ({caller.prefix}, {caller.scope} key, console)"


def admin_action(request: Request, csrf: str | None) -> AbstractContextManager[None]:
    """Check the caller may write and the form is genuine; a context to act in."""
    caller: Caller = request.state.caller
    session = request.state.console_session
    sent = csrf or request.headers.get("x-csrf-token") or ""
    if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise HTTPException(
            403, "The form is out of date (its security token does not match): reload the page."
        )
    if not caller.allows("admin"):
        raise HTTPException(
            403,
            f"The key {caller.name} ({caller.prefix}) has scope {caller.scope!r}: it can look "
            "at every page but change nothing. Log in with an admin key to do this.",
        )
    return acting_as(actor(caller))
