"""`data forget` in the library: what is marked, erased, kept and audited (the user-level
proof, through the real CLI and a real server, is tests/cli/test_forget_cli.py and
tests/serve/test_forget_serving.py)."""

from __future__ import annotations

import pytest

from forgeml.core.errors import ConflictError
from forgeml.core.forget import forget
from forgeml.core.runs import run_stage


def test_forget_marks_the_dataset_and_its_descendants_only(workspace):
    private = run_stage(workspace, "toy.write", {"text": "customer list"}).outputs["dataset"]
    public = run_stage(workspace, "toy.write", {"text": "public docs"}).outputs["dataset"]
    both = run_stage(workspace, "toy.concat", {}, {"parts": [private, public]}).outputs["dataset"]
    model = run_stage(workspace, "toy.train", {"name": "m"}, {"dataset": both}).outputs["model"]
    clean_model = run_stage(workspace, "toy.train", {"name": "m2"}, {"dataset": public}).outputs[
        "model"
    ]

    plan = forget(workspace, private, "GDPR request #42")
    assert {a.sha256 for a in plan.marked} == {private.sha256, both.sha256, model.sha256}
    with pytest.raises(ConflictError, match="GDPR request #42"):
        workspace.registry.resolve("m", purpose="be served")
    workspace.registry.resolve("m2", purpose="be served")
    assert clean_model.forgotten_at is None
    # Data is erased, the model (no --purge-models) stays on disk, the clean data stays.
    assert (
        not (workspace.root / private.path).exists() and not (workspace.root / both.path).exists()
    )
    assert (workspace.root / model.path).exists() and (workspace.root / public.path).exists()
    (entry,) = workspace.registry.audit_entries(action="data.forget")
    assert entry.details["reason"] == "GDPR request #42" and len(entry.details["affected"]) == 3
    assert "customer list" not in str(entry.details)


def test_a_stage_cannot_remake_erased_content(workspace):
    """Re-running the step that made forgotten data refuses, and leaves no bytes behind."""
    private = run_stage(workspace, "toy.write", {"text": "customer list"}).outputs["dataset"]
    forget(workspace, private, "GDPR #7")
    with pytest.raises(ConflictError, match="GDPR #7"):
        run_stage(workspace, "toy.write", {"text": "customer list"})
    assert not (workspace.root / private.path).exists()


def test_an_input_held_in_memory_is_checked_afresh(workspace):
    """A recipe passes earlier steps' Artifact objects: they may predate the deletion."""
    private = run_stage(workspace, "toy.write", {"text": "customer list"}).outputs["dataset"]
    forget(workspace, private, "GDPR #8")
    assert private.forgotten_at is None  # the object in hand still looks usable
    with pytest.raises(ConflictError, match="GDPR #8"):
        run_stage(workspace, "toy.train", {"name": "m"}, {"dataset": private})
