"""Who did an API write, for the audit log: the key's name, shown prefix and id."""

from __future__ import annotations

from typing import Any

from fastapi import Request


def api_key_details(request: Request) -> dict[str, Any]:
    """Audit details naming the API key of the request (set by `auth.require`)."""
    caller = getattr(request.state, "caller", None)
    if caller is None:
        return {}
    return {"api_key": caller.prefix, "api_key_name": caller.name, "api_key_id": caller.key_id}
