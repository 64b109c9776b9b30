"""docs/CONFIGURATION.md is generated from the models, and must say what they say today."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from forgeml import configuration_reference as reference
from forgeml.core.stages import list_stages
from forgeml.eval.gates import parse_gates
from forgeml.serve.settings import ServeSettings

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "forgeml"
DOC = ROOT / "docs" / "CONFIGURATION.md"
REGENERATE = "python -m forgeml.configuration_reference --write docs/CONFIGURATION.md"


@pytest.fixture(scope="module")
def generated() -> str:
    return reference.render()


def test_committed_reference_matches_the_models(generated):
    committed = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert committed == generated, (
        f"{DOC.relative_to(ROOT)} is out of date: regenerate it with `make docs` ({REGENERATE})"
    )


def _declared_stage_names() -> set[str]:
    """Every `@stage("NAME", ...)` in forgeml's source, found without importing anything."""
    names = set()
    for path in SOURCE.rglob("*.py"):
        names |= set(re.findall(r'@stage\(\s*"([^"]+)"', path.read_text(encoding="utf-8")))
    return names


def test_every_stage_has_a_section(generated):
    declared = _declared_stage_names()
    registered = {s.name for s in list_stages() if s.fn.__module__.startswith("forgeml.")}
    assert declared == registered  # a stage in a package list_stages does not import is lost
    assert "train.pretrain" in declared and "data.ingest" in declared
    missing = sorted(name for name in declared if f"\n### {name}\n" not in generated)
    assert not missing, f"stages without a section: {missing}"


def test_stages_registered_outside_forgeml_are_left_out(generated):
    assert "toy.write" in {s.name for s in list_stages()}  # tests/toy_stages.py, via conftest
    assert "toy." not in generated


def test_nested_models_are_tables_not_schema_dumps(generated):
    assert "### QualityThresholds\n" in generated and "### MustBeat\n" in generated
    assert "one of (by `type`): [ExactMatch](#exactmatch)" in generated  # RL rewards
    assert "| `perplexity` | [PerplexityParams](#perplexityparams) | its defaults |" in generated
    assert '"$defs"' not in generated and '"properties"' not in generated


def test_every_environment_variable_forgeml_reads_is_documented(generated):
    read = set()
    for path in SOURCE.rglob("*.py"):
        if path.name == "configuration_reference.py":
            continue
        text = path.read_text(encoding="utf-8")
        read |= set(re.findall(r"\bFORGEML_[A-Z_]+\b", text))
        read |= set(re.findall(r'os\.environ(?:\.get|\.setdefault)?[(\[]\s*"([A-Z_]+)"', text))
    assert {"FORGEML_WORKSPACE", "FORGEML_DATABASE_URL", "VLLM_API_KEY"} <= read
    missing = sorted(name for name in read if f"`{name}`" not in generated)
    assert not missing, f"undocumented environment variables: {missing}"


def test_the_forgeml_yaml_example_is_valid_and_its_keys_documented(generated):
    example = yaml.safe_load(reference.WORKSPACE_EXAMPLE)
    ServeSettings(**example["serving"])
    assert not parse_gates(example["gates"], "example").empty()
    documented = {row[0].strip("`") for row in reference.WORKSPACE_KEYS}
    assert set(example) <= documented


def test_output_names_no_path_of_this_machine(generated):
    home = str(Path.home())
    assert str(ROOT) not in generated
    assert home == "/" or home not in generated


def test_write_is_atomic_and_idempotent(tmp_path, capsys, generated):
    target = tmp_path / "docs" / "CONFIGURATION.md"
    reference.main(["--write", str(target)])
    assert target.read_text(encoding="utf-8") == generated
    before = target.stat().st_mtime_ns
    reference.main(["--write", str(target)])
    assert target.stat().st_mtime_ns == before
    assert "up to date" in capsys.readouterr().out
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]
