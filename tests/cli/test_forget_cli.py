"""`forgeml data forget`, as a user runs it: the installed CLI in a subprocess.

A helpdesk dataset holds Jane's tickets, partly from a file uploaded through the API;
a model is trained on it, another on public data only. After the deletion request the
data's bytes are gone (tombstones remain), every use of the model is refused naming
the request, the clean model still works, and --purge-models erases the weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from forgeml.core.lineage import upstream
from forgeml.core.workspace import Workspace
from forgeml.jobs.files import store_file

FORGEML = [sys.executable, "-c", "import toy_stages; from forgeml.cli.app import main; main()"]
EMAIL = "jane.doe@example.com"
REASON = "GDPR #42"
RECIPE = """\
name: helpdesk
steps:
  - name: tickets
    uses: toy.write
    with: {{text: "Jane Doe <{email}> asked about her order. ", paths: ["{upload}"]}}
  - name: manual
    uses: toy.write
    with: {{text: "public manual"}}
  - name: both
    uses: toy.concat
    inputs: {{parts: [tickets, manual]}}
  - name: helpdesk-model
    uses: toy.train
    with: {{name: helpdesk, steps: 2}}
    inputs: {{dataset: both}}
  - name: manual-model
    uses: toy.train
    with: {{name: manual-bot, steps: 2}}
    inputs: {{dataset: manual}}
"""
RETRAIN = """\
name: retrain
steps:
  - name: again
    uses: toy.train
    with: {{name: helpdesk, steps: 3}}
    inputs: {{dataset: {dataset}}}
"""


def forgeml(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FORGEML, "--workspace", str(root), *args], capture_output=True, text=True, check=False
    )


def refused(root: Path, *args: str) -> str:
    result = forgeml(root, *args)
    output = result.stdout + result.stderr
    assert result.returncode == 2, f"{args}: {output}"
    assert REASON in output and "forgotten" in output, f"{args}: {output}"
    assert "Traceback" not in output
    return output


def stored_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for folder in ("artifacts", "files", "runs")
        for path in sorted((root / folder).rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def helpdesk(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "ws"
    assert forgeml(root, "init").returncode == 0
    workspace = Workspace.open(root)  # stores an upload as /v1/files does
    content = f"{EMAIL} wants a refund\n".encode()
    upload = store_file(workspace, "jane_doe.txt", content, "user_data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(email=EMAIL, upload=root / upload.path))
    made = forgeml(root, "run", str(recipe))
    assert made.returncode == 0, made.stderr
    registry = workspace.registry
    model = registry.resolve("helpdesk")
    both = registry.resolve(upstream(workspace, model)["inputs"][0]["ref"])
    (tickets,) = [
        a
        for a in registry.list_artifacts("dataset")
        if a.id != both.id and "Jane" in (root / a.path / "data.txt").read_text()
    ]
    refs = {
        "tickets": tickets,
        "both": both,
        "model": model,
        "clean": registry.resolve("manual-bot"),
        "upload": upload,
    }
    workspace.close()
    return root, refs


@pytest.mark.slow
def test_forget_erases_the_data_and_refuses_every_use_of_what_was_made_from_it(helpdesk, tmp_path):
    root, refs = helpdesk
    tickets, both, model = refs["tickets"], refs["both"], refs["model"]

    # --dry-run lists what would go and changes nothing.
    before = stored_files(root)
    dry = forgeml(root, "--json", "data", "forget", tickets.ref, "--reason", REASON, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] and {tickets.ref, both.ref} <= set(plan["erased"])
    assert refs["upload"].id in plan["erased"] and model.ref in plan["kept_unusable"]
    assert stored_files(root) == before
    assert forgeml(root, "models", "alias", "helpdesk", "1", "candidate").returncode == 0
    audit = json.loads(forgeml(root, "--json", "audit", "--action", "data.forget").stdout)
    assert audit == []

    done = forgeml(root, "data", "forget", tickets.ref, "--reason", REASON)
    assert done.returncode == 0, done.stderr

    # The bytes are gone: the dataset, what was mixed from it, the upload, run scratch.
    after = stored_files(root)
    assert not (root / tickets.path).exists() and not (root / both.path).exists()
    assert not (root / refs["upload"].path).exists()
    assert not any(EMAIL.encode() in content for content in after.values())
    assert (root / model.path).exists() and (root / refs["clean"].path).exists()
    listed = json.loads(forgeml(root, "--json", "data", "tombstones").stdout)
    assert {(t["ref"], t["kind"]) for t in listed} >= {
        (tickets.ref, "dataset"), (both.ref, "dataset"), (refs["upload"].id, "file")
    }  # fmt: skip
    assert all(REASON in t["reason"] and t["sha256"] and t["erased_by"] for t in listed)
    # The audit entry names the request by hashes, not the personal data.
    (entry,) = json.loads(forgeml(root, "--json", "audit", "--action", "data.forget").stdout)
    assert REASON in json.dumps(entry) and "jane" not in json.dumps(entry).lower()

    # Every use of the model trained on it is refused, naming the request.
    refused(root, "models", "promote", "helpdesk:1", "--alias", "prod")
    refused(root, "models", "alias", "helpdesk", "1", "prod")
    refused(root, "export", "helpdesk", "--format", "hf")
    refused(root, "eval", "run", "helpdesk")
    refused(root, "reproduce", "helpdesk")
    refused(root, "serve", "helpdesk", "--port", "1")
    refused(root, "train", "sft", "--model", "manual-bot", "--data", both.ref)
    retrain = tmp_path / "retrain.yaml"
    retrain.write_text(RETRAIN.format(dataset=both.ref))
    refused(root, "run", str(retrain))  # a training stage's input
    # The model trained on public data only is untouched.
    clean = forgeml(root, "models", "promote", "manual-bot:1", "--alias", "prod")
    assert clean.returncode == 0, clean.stderr

    purged = forgeml(root, "data", "forget", tickets.ref, "--reason", REASON, "--purge-models")
    assert purged.returncode == 0, purged.stderr
    assert not (root / model.path).exists() and (root / refs["clean"].path).exists()
    listed = json.loads(forgeml(root, "--json", "data", "tombstones").stdout)
    assert (model.ref, "model") in {(t["ref"], t["kind"]) for t in listed}
    refused(root, "models", "promote", "helpdesk:1", "--alias", "prod")
