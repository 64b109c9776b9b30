"""The quickstart's last step: serve the model and talk to it with the `openai` client.

Exactly what an application does after swapping its base URL: a plain chat completion
(the model answers a new ticket with its routing as JSON) and one with the
`route_ticket` tool offered (the model calls it). The server runs on a free loopback
port with a temporary key, revoked when the demo ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from forgeml.quickstart.routing import ROUTE_TOOL, SYSTEM_PROMPT

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

DEMO_TICKET = "The headset Pro I bought keeps disconnecting from wifi. Please help ASAP!"


@dataclass
class DemoExchange:
    request: str
    answer: str  # the content, or the tool call as name(arguments)
    finish_reason: str


def chat_with_model(workspace: Workspace, model_ref: str) -> tuple[str, list[DemoExchange]]:
    """Serve `model_ref`, send the two requests, stop. (base URL used, exchanges)."""
    from openai import OpenAI

    from forgeml.serve.app import create_app
    from forgeml.serve.auth import create_key, revoke_key
    from forgeml.serve.background import BackgroundServer
    from forgeml.serve.settings import ServeSettings

    key, secret = create_key(workspace, "quickstart-demo", "inference")
    app = create_app(workspace, [model_ref], ServeSettings(job_workers=0))
    try:
        with BackgroundServer(app) as url:
            client = OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)
            plain = client.chat.completions.create(
                model=model_ref,
                messages=[
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": DEMO_TICKET},
                ],
                max_tokens=40,
                temperature=0,
            )
            tooled = client.chat.completions.create(
                model=model_ref,
                messages=[{"role": "user", "content": DEMO_TICKET}],
                tools=[ROUTE_TOOL],
                tool_choice="auto",
                max_tokens=40,
                temperature=0,
            )
    finally:
        revoke_key(workspace, str(key.id))
    return url, [
        DemoExchange(
            "chat", plain.choices[0].message.content or "", plain.choices[0].finish_reason
        ),
        DemoExchange("chat + tools", _describe(tooled.choices[0]), tooled.choices[0].finish_reason),
    ]


def _describe(choice: Any) -> str:
    calls = choice.message.tool_calls or []
    if not calls:
        return choice.message.content or ""
    return "; ".join(
        f"{call.function.name}({json.dumps(json.loads(call.function.arguments))})" for call in calls
    )
