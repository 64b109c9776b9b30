"""forgeml.yaml: known keys are read; a misspelt one is an error that names it."""

from __future__ import annotations

import pytest

from forgeml.configuration_reference import WORKSPACE_KEYS
from forgeml.core.errors import WorkspaceError
from forgeml.core.workspace import SETTINGS_KEYS, Workspace


def test_a_misspelt_setting_is_named_with_a_suggestion(tmp_path):
    workspace = Workspace.open(tmp_path / "ws", create=True)
    workspace.config_path.write_text("forgeml_workspace: 1\nservng:\n  max_batch_size: 4\n")
    with pytest.raises(
        WorkspaceError, match=r"unknown setting 'servng' \(did you mean 'serving'\?\)"
    ):
        _ = Workspace.open(tmp_path / "ws").settings


def test_known_settings_are_read_and_documented(tmp_path):
    workspace = Workspace.open(tmp_path / "ws", create=True)
    workspace.config_path.write_text("forgeml_workspace: 1\nserving:\n  max_batch_size: 4\n")
    assert Workspace.open(tmp_path / "ws").settings["serving"] == {"max_batch_size": 4}
    documented = [row[0].strip("`") for row in WORKSPACE_KEYS]
    assert documented == list(SETTINGS_KEYS)
