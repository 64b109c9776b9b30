"""One console server (`forgeml ui`'s app, in a thread) over one small workspace, and
one headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from console_fixtures import build_console_world

from forgeml.console import create_console_app
from forgeml.serve.background import BackgroundServer
from forgeml.serve.settings import ServeSettings

CHROMIUM = os.environ.get("FORGEML_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def console_world(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    world = build_console_world(tmp_path_factory.mktemp("console"))
    torch.set_num_threads(threads)
    yield world
    world.workspace.close()


@pytest.fixture(scope="session")
def console_url(console_world) -> str:
    app = create_console_app(console_world.workspace, ServeSettings(key_cache_seconds=0.0))
    with BackgroundServer(app) as url:
        yield url


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    target = os.environ.get("FORGEML_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")  # not session: its event loop stays "running" until closed
def browser():
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()
