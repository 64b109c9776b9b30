"""The web console: server-rendered pages over the registry, behind the API's keys.

    forgeml serve my-model@prod     # the API, and the console at http://127.0.0.1:8000/ui
    forgeml ui                      # the console alone (no model loaded)

Log in with an admin key (everything) or a `viewer` key (reads every page, changes
nothing). Pages are FastAPI + Jinja2 templates with htmx and uPlot vendored under
static/vendor (MANIFEST.json: npm package, version, sha256): no build step, no network.
Every action calls the same function as the CLI (promote, keys, files, jobs, runs) and
is audited as the key that did it (`acting_as`).
"""

from forgeml.console.app import create_console_app, mount_console

__all__ = ["create_console_app", "mount_console"]
