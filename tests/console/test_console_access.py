"""Who gets which console page, over real HTTP: the guard, sessions, scopes, CSRF, and
bad input answered with a clear page (never a traceback)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import httpx
import pytest

from forgeml.console.render import HERE
from forgeml.core.feedback import FeedbackEntry, add_feedback, list_feedback
from forgeml.data.dataset import iter_records


def login(url: str, key: str) -> httpx.Client:
    client = httpx.Client(base_url=url)
    response = client.post("/ui/login", data={"key": key, "next": "/ui/models"})
    assert response.status_code == 303, response.text
    return client


def audit_ids(world) -> list[int]:
    return [entry.id for entry in world.workspace.registry.audit_entries(1000)]


def csrf_of(client: httpx.Client, path: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def test_no_page_without_a_valid_session(console_url, console_world):
    anonymous = httpx.Client(base_url=console_url)
    response = anonymous.get("/ui/models/helpdesk")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fmodels%2Fhelpdesk"
    # An API bearer key is not a console session.
    bearer = {"Authorization": f"Bearer {console_world.admin_key}"}
    assert anonymous.get("/ui/models", headers=bearer).status_code == 303
    # A made-up or stale cookie: back to the login page, which says why.
    anonymous.cookies.set("forgeml_session", "made-up")
    stale = anonymous.get("/ui/models")
    assert stale.status_code == 303 and "reason=expired" in stale.headers["location"]
    anonymous.cookies.clear()
    page = anonymous.get(stale.headers["location"])
    assert "Your session has expired" in page.text
    # htmx fragments are told to go to the login page, not given one to swap in.
    fragment = anonymous.get("/ui/runs/x/live", headers={"HX-Request": "true"})
    assert fragment.status_code == 401 and fragment.headers["HX-Redirect"].startswith("/ui/login")
    # Posting an action without a session does nothing.
    before = audit_ids(console_world)
    denied = anonymous.post("/ui/models/helpdesk/promote", data={"version": 1, "alias": "x"})
    assert denied.status_code == 303
    assert audit_ids(console_world) == before


def test_login_refuses_wrong_and_inference_keys(console_url, console_world):
    client = httpx.Client(base_url=console_url)
    wrong = client.post("/ui/login", data={"key": "fml-not-a-key"})
    assert wrong.status_code == 401 and "not valid" in wrong.text and "Traceback" not in wrong.text
    app_key = client.post("/ui/login", data={"key": console_world.inference_key})
    assert app_key.status_code == 401 and "needs an admin or viewer key" in app_key.text
    assert "forgeml_session" not in client.cookies


def test_session_cookie_is_httponly_strict_and_expires(console_url, console_world):
    client = httpx.Client(base_url=console_url)
    response = client.post("/ui/login", data={"key": console_world.viewer_key, "next": "/ui/data"})
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert response.headers["location"] == "/ui/data"
    assert client.get("/ui/models").status_code == 200
    # Time runs out (the store's own expiry, as after the idle limit).
    from forgeml.console.sessions import SessionStore

    store = SessionStore(console_world.workspace, idle_seconds=-1.0)
    assert store.get(store.create("digest").token) is None
    # An off-site `next` is ignored: no open redirect from the login form.
    other = httpx.Client(base_url=console_url).post(
        "/ui/login", data={"key": console_world.viewer_key, "next": "https://evil.example/"}
    )
    assert other.headers["location"] == "/ui/models"


def test_viewer_sees_everything_and_changes_nothing(console_url, console_world):
    viewer = login(console_url, console_world.viewer_key)
    for path in ("/ui/models/helpdesk", "/ui/runs", "/ui/evals", "/ui/jobs", "/ui/keys",
                 "/ui/audit", "/ui/data", "/ui/monitor", "/ui/feedback"):  # fmt: skip
        page = viewer.get(path)
        assert page.status_code == 200, path
        assert "Promote through the gates" not in page.text and "Create key" not in page.text
    csrf = csrf_of(viewer, "/ui/runs") if 'name="csrf"' in viewer.get("/ui/runs").text else None
    session_csrf = csrf or re.search(r'X-CSRF-Token": "([^"]+)"', viewer.get("/ui/runs").text)[1]
    before = audit_ids(console_world)
    refused = viewer.post(
        "/ui/models/helpdesk/promote",
        data={"version": 1, "alias": "viewer-try", "csrf": session_csrf},
    )
    assert refused.status_code == 403
    assert "scope &#39;viewer&#39;" in refused.text and "Log in with an admin key" in refused.text
    assert audit_ids(console_world) == before


def test_every_console_action_is_audited_with_the_acting_key(console_url, console_world):
    admin = login(console_url, console_world.admin_key)
    first = max(audit_ids(console_world))
    csrf = csrf_of(admin, "/ui/keys")
    created = admin.post("/ui/keys", data={"name": "audit-walk", "scope": "viewer", "csrf": csrf})
    assert created.status_code == 200 and "audit-walk" in created.text
    key_id = re.search(r"/ui/keys/(\d+)/revoke", admin.get("/ui/keys").text.split("audit-walk")[1])
    admin.post(f"/ui/keys/{key_id[1]}/revoke", data={"csrf": csrf})
    promoted = admin.post(
        "/ui/models/helpdesk/promote", data={"version": 1, "alias": "audit-walk", "csrf": csrf}
    )
    # Post/redirect/get: the outcome is shown on the model page.
    assert promoted.status_code == 303, promoted.text
    assert "event=" in promoted.headers["location"]
    admin.post("/ui/logout")
    entries = [e for e in console_world.workspace.registry.audit_entries(1000) if e.id > first]
    done = {e.action: e.actor for e in entries}
    for action in ("api_key.create", "api_key.revoke", "model.promote", "console.logout"):
        assert action in done, f"{action} is not in the audit log: {sorted(done)}"
        assert "admin key, console" in done[action]  # the acting key, and where it acted


def test_forms_need_the_session_token_and_this_origin(console_url, console_world):
    admin = login(console_url, console_world.admin_key)
    no_token = admin.post("/ui/keys", data={"name": "sneaky", "scope": "admin"})
    assert no_token.status_code == 403 and "security token" in no_token.text
    csrf = csrf_of(admin, "/ui/keys")
    cross = admin.post(
        "/ui/keys",
        data={"name": "sneaky", "scope": "admin", "csrf": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403 and "another site" in cross.text
    assert "sneaky" not in admin.get("/ui/keys").text


def test_bad_references_get_clear_pages(console_url, console_world):
    admin = login(console_url, console_world.admin_key)
    gone = admin.get("/ui/models/no-such-model")
    assert gone.status_code == 404 and "There is no model named" in gone.text
    lineage = admin.get("/ui/lineage/model/ffffffffffff")
    assert lineage.status_code == 404 and "<h1>Not found</h1>" in lineage.text
    nowhere = admin.get("/ui/nowhere")
    assert nowhere.status_code == 404 and "No such page" in nowhere.text
    compare = admin.get("/ui/evals/compare?ref=eval/0000000")
    assert compare.status_code == 400 and "at least two" in compare.text
    # A forgotten dataset can be looked at (marked) but not shown as data.
    marked = admin.get(f"/ui/lineage/{console_world.forgotten_dataset}")
    assert marked.status_code == 200 and "was forgotten" in marked.text
    assert "deletion request 42" in marked.text
    for page in (gone, lineage, nowhere, compare, marked):
        assert "Traceback" not in page.text and 'File "' not in page.text


def test_static_files_are_open_and_hold_nothing_private(console_url):
    client = httpx.Client(base_url=console_url)
    assert client.get("/ui/static/console.css").status_code == 200
    assert client.get("/ui/static/vendor/htmx.min.js").status_code == 200
    for path in ("/ui/static/../pages/admin.py", "/ui/static/%2e%2e/sessions.py"):
        assert client.get(path).status_code in (303, 404)
    static = HERE / "static"
    for file in static.rglob("*"):
        if file.is_file():
            assert b"fml-" not in file.read_bytes() or file.suffix == ".js"


def test_vendored_files_match_their_manifest():
    vendor = HERE / "static" / "vendor"
    manifest = json.loads((vendor / "MANIFEST.json").read_text())
    listed = {}
    for package in manifest["packages"]:
        assert package["version"] and re.fullmatch(r"[0-9a-f]{64}", package["tarball_sha256"])
        for name, entry in package["files"].items():
            listed[name] = entry["sha256"]
    on_disk = {p.name for p in vendor.iterdir()} - {"MANIFEST.json"}
    assert on_disk == set(listed)
    for name, digest in listed.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.slow
def test_forgeml_serve_has_the_console_at_ui(console_world):
    """The model server mounts the same console, behind the same guard."""
    from forgeml.serve import ServeSettings, create_app
    from forgeml.serve.background import BackgroundServer

    settings = ServeSettings(engine_process=False, torch_threads=1, key_cache_seconds=0.0,
                             job_workers=0, drift_check_seconds=0)  # fmt: skip
    app = create_app(console_world.workspace, ["helpdesk:1"], settings)
    with BackgroundServer(app) as url:
        client = httpx.Client(base_url=url)
        assert client.get("/ui/models").status_code == 303
        assert login(url, console_world.admin_key).get("/ui/models/helpdesk").status_code == 200
        models = client.get(
            "/v1/models", headers={"Authorization": f"Bearer {console_world.inference_key}"}
        )
        assert models.status_code == 200  # the API is unchanged beside it
        viewer_api = client.get(
            "/v1/models", headers={"Authorization": f"Bearer {console_world.viewer_key}"}
        )
        assert viewer_api.status_code == 403  # a viewer key reads the console, not the API


def test_static_directory_exists():
    assert Path(HERE / "static" / "console.js").is_file()


def test_feedback_is_corrected_and_made_into_datasets_in_the_console(console_url, console_world):
    workspace = console_world.workspace
    asked = [{"role": "user", "content": "Where is order 7?"}]
    for completion, answer, rating in (("cmpl-a", "No idea.", 1), ("cmpl-b", "It ships today.", 5)):
        add_feedback(
            workspace,
            FeedbackEntry(
                completion_id=completion,
                model="reviewed-model",
                messages=asked,
                output={"role": "assistant", "content": answer},
                rating=rating,
                source="server",
            ),
        )
    bad_id = next(e.id for e in list_feedback(workspace) if e.completion_id == "cmpl-a")

    viewer = login(console_url, console_world.viewer_key)
    page = viewer.get("/ui/feedback?model=reviewed-model")
    assert "No idea." in page.text and "Save correction" not in page.text  # read-only
    admin = login(console_url, console_world.admin_key)
    csrf = csrf_of(admin, "/ui/feedback?model=reviewed-model")
    empty = admin.post(f"/ui/feedback/{bad_id}/correct", data={"correction": " ", "csrf": csrf})
    assert empty.status_code == 400 and "a correction is 1 to 20,000 characters" in empty.text
    missing = admin.post("/ui/feedback/999999/correct", data={"correction": "x", "csrf": csrf})
    assert missing.status_code == 404 and "There is no feedback 999999" in missing.text
    fixed = "Order 7 left our warehouse this morning."
    saved = admin.post(f"/ui/feedback/{bad_id}/correct", data={"correction": fixed, "csrf": csrf})
    assert saved.status_code == 303
    page = admin.get(saved.headers["location"])
    assert fixed in page.text and "No idea." in page.text  # the original stays as given
    (entry,) = workspace.registry.audit_entries(1, action="feedback.create")
    assert entry.details["corrects"] == bad_id and "admin key, console" in entry.actor

    made = admin.post(
        "/ui/feedback/datasets",
        data={"model": "reviewed-model", "name": "reviewed", "min_rating": 4, "csrf": csrf},
    )
    assert made.status_code == 200, made.text
    assert "3 feedback rows" in made.text.replace("From ", "")
    sft = workspace.registry.resolve("reviewed-sft", kind="dataset")
    rows = [json.dumps(r) for r in iter_records(workspace.root / sft.path)]
    assert any(fixed in row for row in rows)  # the correction is what SFT trains on


def test_a_session_outlives_a_restart_and_ends_everywhere_at_logout(console_world):
    from forgeml.console.app import create_console_app
    from forgeml.core.schema import ConsoleSession
    from forgeml.serve.background import BackgroundServer
    from forgeml.serve.settings import ServeSettings

    settings = ServeSettings(key_cache_seconds=0.0)
    with BackgroundServer(create_console_app(console_world.workspace, settings)) as first:
        client = login(first, console_world.viewer_key)
        cookie = client.cookies["forgeml_session"]
    with console_world.workspace.registry.session() as db:  # only the token's hash is kept
        assert db.get(ConsoleSession, hashlib.sha256(cookie.encode()).hexdigest()) is not None
        assert not db.query(ConsoleSession).filter_by(token_hash=cookie).count()
    with BackgroundServer(create_console_app(console_world.workspace, settings)) as second, \
            BackgroundServer(create_console_app(console_world.workspace, settings)) as third:  # fmt: skip
        again = httpx.Client(base_url=second, cookies={"forgeml_session": cookie})
        assert again.get("/ui/models").status_code == 200  # the restart kept the session
        elsewhere = httpx.Client(base_url=third, cookies={"forgeml_session": cookie})
        assert elsewhere.get("/ui/models").status_code == 200  # a replica knows it too
        again.post("/ui/logout", headers={"Origin": second})
        gone = httpx.Client(base_url=second, cookies={"forgeml_session": cookie})
        assert gone.get("/ui/models").status_code in (302, 303)
