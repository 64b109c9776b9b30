"""`data forget`: a dataset and everything derived from it become unusable, audited."""

from __future__ import annotations

import pytest

from forgeml.core.errors import ConflictError
from forgeml.core.forget import ensure_usable, forget
from forgeml.core.runs import run_stage


def test_forget_marks_the_dataset_and_its_descendants_only(workspace):
    private = run_stage(workspace, "toy.write", {"text": "customer list"}).outputs["dataset"]
    public = run_stage(workspace, "toy.write", {"text": "public docs"}).outputs["dataset"]
    both = run_stage(workspace, "toy.concat", {}, {"parts": [private, public]}).outputs["dataset"]
    model = run_stage(workspace, "toy.train", {"name": "m"}, {"dataset": both}).outputs["model"]
    clean_model = run_stage(workspace, "toy.train", {"name": "m2"}, {"dataset": public}).outputs[
        "model"
    ]

    marked = forget(workspace, private, "GDPR request #42")
    assert {a.sha256 for a in marked} == {private.sha256, both.sha256, model.sha256}
    with pytest.raises(ConflictError, match="GDPR request #42"):
        ensure_usable(workspace.registry.resolve("m"), "serve")
    ensure_usable(workspace.registry.resolve("m2"), "serve")
    assert clean_model.forgotten_at is None
    (entry,) = workspace.registry.audit_entries(action="data.forget")
    assert entry.details["reason"] == "GDPR request #42" and len(entry.details["affected"]) == 3
