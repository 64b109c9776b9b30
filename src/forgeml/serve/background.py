"""The API server in a background thread on a free loopback port.

    with BackgroundServer(create_app(workspace, ["my-model@prod"])) as url:
        OpenAI(base_url=f"{url}/v1", api_key=key).chat.completions.create(...)

For demos (the quickstart) and tests: the real uvicorn server and the real HTTP stack,
stopped (lifespan shutdown included) when the block ends.
"""

from __future__ import annotations

import threading
import time

import uvicorn

from forgeml.core.errors import ForgeError

START_TIMEOUT_SECONDS = 120.0


class BackgroundServer:
    def __init__(self, app, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        """Start and wait until the server accepts connections; its base URL."""
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ForgeError("the API server did not start (see the messages above)")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *_exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
