"""A small help centre to make examples from, and a teacher endpoint on 127.0.0.1.

The teacher is FastAPI served by uvicorn in a thread. It answers forgeml's built-in
prompts the way a careful model would (questions about the passage, answers in its words)
plus one answer that is not in the passage, so the grounding filter has work to do. It
records every request; `fail_after` makes it refuse requests past a count (a vendor
outage half way through a run).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

RETURNS = """# Returns policy

A return label is a prepaid shipping label that customers print from their order page.
Customers may send back any item within thirty days of delivery. Faulty items are
replaced free of charge, and the replacement ships within two working days.

## Refund times

Refunds are issued to the original payment method within five working days. A duplicate
charge is refunded on the day it is reported. Store credit is available instantly for
customers who prefer it to a refund.

## Delivery options

- Standard - delivered in three to five working days
- Express - delivered the next working day if ordered before noon
- Pickup - collected from a partner shop near the customer
"""

ROUTER = """# Router manual

## Command line

The router's command line tool changes settings without the web page.

  --reset-network    restore the factory network settings and reboot
  --firmware-check   look for a firmware update and install it at night

## Lights

A blinking amber light means the router is installing a firmware update right now.
Please contact the support desk at helpdesk.owner@example.com when the amber light blinks for more than one hour.
"""
INVENTED = "Bananas are purple and cost nine euros each."


def write_help_centre(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "returns.md").write_text(RETURNS, encoding="utf-8")
    (directory / "router.md").write_text(ROUTER, encoding="utf-8")
    return directory


def _passage(prompt: str) -> str:
    return prompt.split("):\n", 1)[1]


def reply_to(prompt: str) -> str:
    passage = _passage(prompt)
    first = " ".join(passage.split(". ")[0].split())
    if prompt.startswith("Write up to"):
        if "blinking amber" in passage:
            return "this is not JSON"
        pairs = [
            {"question": "What does the passage explain first?", "answer": first},
            {"question": "How much are bananas?", "answer": INVENTED},
        ]
        return "```json\n" + json.dumps({"pairs": pairs}) + "\n```"
    if prompt.startswith("Summarise"):
        return json.dumps({"summary": first + "."})
    words = [word.strip("-,.") for word in passage.split() if word[:1].isupper()]
    return json.dumps({"items": [{"name": words[0], "description": first}] if words else []})


class FakeTeacher:
    """`with FakeTeacher() as teacher:` serves on 127.0.0.1 at `teacher.url` (…/v1)."""

    def __init__(self, fail_after: int | None = None, port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_after = fail_after
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(
                {"body": body, "authorization": request.headers.get("authorization")}
            )
            if self.fail_after is not None and len(self.requests) > self.fail_after:
                error = {"message": "quota exceeded", "type": "invalid_request_error"}
                return JSONResponse({"error": error}, status_code=400)
            content = reply_to(body["messages"][-1]["content"])
            return JSONResponse(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )

        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> FakeTeacher:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake teacher did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
