"""The console in a real browser (headless Chromium via Playwright), the way a person
uses it: log in, promote and roll back through the gates, see a refusal explained,
follow lineage to a raw file, compare two evaluations, upload a bad file and see its
line, watch a run train live and cancel it, make and revoke a key, read the audit log;
a viewer who cannot change anything; a session that expired. Each page is saved as a
screenshot (to $FORGEML_SCREENSHOTS, else a pytest temporary folder)."""

from __future__ import annotations

import re

import pytest
from console_fixtures import start_slow_run

pytestmark = pytest.mark.slow

UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML)"""


@pytest.fixture
def page(browser, console_url):
    context = browser.new_context(base_url=console_url, viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def shot(page, screenshots, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def log_in(page, key: str, target: str = "/ui/models") -> None:
    page.goto(target)
    assert "/ui/login" in page.url
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(re.escape(target) + "$"))


def promote(page, version: int, alias: str = "prod") -> None:
    page.get_by_label("Version").select_option(f"helpdesk:{version}")
    page.get_by_label("Alias").fill(alias)
    page.get_by_role("button", name="Promote through the gates").click()


def test_an_admin_governs_a_model_end_to_end(page, console_world, screenshots):
    page.goto("/ui/login")
    shot(page, screenshots, "01-login")
    log_in(page, console_world.admin_key)
    shot(page, screenshots, "02-models")
    page.get_by_role("link", name="helpdesk", exact=True).click()
    assert page.evaluate(UNLABELLED) == []

    # Promote helpdesk:1, then :2, through the gates; their results are shown.
    promote(page, 1)
    outcome = page.locator("#outcome")
    assert "Promoted: helpdesk@prod → helpdesk:1" in outcome.inner_text()
    assert "min exact_match" in outcome.inner_text() and "passed" in outcome.inner_text()
    promote(page, 2)
    assert "It was helpdesk:1" in page.locator("#outcome").inner_text()
    assert page.locator("#alias-prod").inner_text() == "helpdesk:2"
    shot(page, screenshots, "03-model-promoted")

    # Roll back: @prod returns to the version it held before, through the gates again.
    page.get_by_role("button", name="Roll back @prod to 1").click()
    assert page.locator("#alias-prod").inner_text() == "helpdesk:1"
    assert "roll back @prod" in page.locator("#outcome").inner_text()

    # helpdesk:3 has no evaluation: the gates refuse, and the page says why.
    promote(page, 3)
    assert page.locator("h1").inner_text() == "Promotion refused"
    assert "has no evaluation" in page.locator("table").inner_text()
    hint = page.locator("main").inner_text()  # the console's way past the gates, not the CLI's
    assert "Promote even if gates fail" in hint and "--force" not in hint
    shot(page, screenshots, "04-promotion-refused")
    page.go_back()
    page.reload()
    assert page.locator("#alias-prod").inner_text() == "helpdesk:1"

    # Every action is audited as the key that did it.
    entries = console_world.workspace.registry.audit_entries(200, action="model.promote")
    actors = {(e.action, e.actor) for e in entries}
    assert ("model.promote", f"ops ({console_world.admin_key[:12]}, admin key, console)") in actors
    assert any(action == "model.promote.refused" for action, _ in actors)

    # Lineage: from helpdesk:2 back to the raw files it was made from.
    page.goto("/ui/models/helpdesk")
    version_2 = page.locator("tbody tr").filter(has=page.get_by_role("cell", name="2", exact=True))
    version_2.get_by_role("link").first.click()
    assert "Lineage of model/" in page.locator("h1").inner_text()
    raw = page.locator(".raw-file", has_text="corpus/topic-0.txt").inner_text()
    assert "sha256:" in raw  # the document the dataset was ingested from, by its hash
    shot(page, screenshots, "05-lineage-up")
    page.locator(".kind", has_text="dataset").first.locator("xpath=..").get_by_role(
        "link"
    ).first.click()
    page.get_by_role("link", name="Show what was made from it").click()
    assert "helpdesk:1" in page.inner_text("main") and "helpdesk:2" in page.inner_text("main")
    shot(page, screenshots, "06-lineage-down")

    # Two evaluations side by side.
    page.get_by_role("link", name="Evaluations").click()
    boxes = page.get_by_role("checkbox")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.get_by_role("button", name="Compare").click()
    heading = page.locator("h1").inner_text()
    assert "helpdesk:1" in heading and "helpdesk:2" in heading
    assert page.locator("#metrics tbody tr").count() > 0
    assert page.locator("#examples tbody tr").count() == 5
    shot(page, screenshots, "07-evals-compare")

    # A bad training file: refused, with the line that is wrong.
    page.get_by_role("link", name="Jobs & files").click()
    bad = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n{"prompt": 3}\n'
    page.get_by_label("Fine-tuning file").set_input_files(
        {"name": "bad.jsonl", "mimeType": "application/json", "buffer": bad}
    )
    page.get_by_role("button", name="Upload and check").click()
    assert page.locator("#upload-problems li").nth(0).inner_text() == (
        "bad.jsonl:2: prompt: expected a string or a list of messages; got a number"
    )
    shot(page, screenshots, "08-upload-refused")


def test_a_run_updates_live_and_can_be_cancelled(page, console_world, screenshots):
    run_id = start_slow_run(console_world.workspace)
    log_in(page, console_world.admin_key, f"/ui/runs/{run_id}")
    page.evaluate("window.__sameDocument = true")
    first = int(page.locator("#metric-points").inner_text().split()[0])
    page.wait_for_function(
        f"parseInt(document.querySelector('#metric-points').textContent) > {first + 2}",
        timeout=20_000,
    )
    assert page.evaluate("window.__sameDocument") is True  # updated without a reload
    assert page.locator(".chart canvas").count() >= 1  # the loss curve is drawn
    shot(page, screenshots, "09-run-live")
    page.get_by_role("button", name="Cancel run").click()
    page.wait_for_function(
        "document.querySelector('#run-status').textContent === 'cancelled'", timeout=20_000
    )
    shot(page, screenshots, "10-run-cancelled")


def test_keys_audit_and_keyboard(page, console_world, screenshots):
    log_in(page, console_world.admin_key, "/ui/keys")
    page.get_by_label("Name (who or what uses it)").fill("dashboard")
    page.get_by_label("Scope").select_option("viewer")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("Secret").input_value()
    assert secret.startswith("fml-")
    shot(page, screenshots, "11-key-created")
    page.goto("/ui/keys")
    assert secret not in page.content()  # shown once only
    page.get_by_role("button", name=re.compile("Revoke key dashboard")).click()
    assert "revoked" in page.locator("tr", has_text="dashboard").inner_text()

    page.get_by_role("link", name="Audit log").click()
    audit = page.locator("#audit").inner_text()
    assert "api_key.revoke" in audit and "ops (fml-" in audit
    shot(page, screenshots, "12-audit")
    for path in ("/ui/monitor", "/ui/data", "/ui/feedback", "/ui/runs", "/ui/jobs"):
        page.goto(path)
        assert page.evaluate(UNLABELLED) == [], path
        shot(page, screenshots, "13-" + path.rsplit("/", 1)[1])

    # Keyboard: the first Tab reaches the skip link, Enter moves focus to the content.
    page.goto("/ui/models")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "A"

    # Narrow: nothing wider than a phone's screen but the scrolling tables.
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto("/ui/models/helpdesk")
    assert page.evaluate("document.documentElement.scrollWidth") <= 376
    shot(page, screenshots, "14-model-narrow")


def test_a_viewer_looks_and_an_expired_session_logs_in_again(
    page, console_world, console_url, screenshots
):
    log_in(page, console_world.viewer_key, "/ui/models/helpdesk")
    assert page.get_by_role("button", name="Promote through the gates").count() == 0
    assert "can look but not promote" in page.inner_text("main")
    shot(page, screenshots, "15-viewer-model")
    # The session ends (as when its idle time runs out): the next page asks to log in.
    page.context.clear_cookies()
    page.context.add_cookies(
        [{"name": "forgeml_session", "value": "expired-token", "url": console_url + "/ui"}]
    )
    page.goto("/ui/runs")
    assert "/ui/login" in page.url
    assert "Your session has expired" in page.inner_text("main")
    shot(page, screenshots, "16-session-expired")
