"""The command line, in process (CliRunner) and as the installed `forgeml` script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forgeml import __version__
from forgeml.cli.app import app

runner = CliRunner()
FORGEML = [sys.executable, "-m", "forgeml"]
# The real entry point, with the test-only toy stages registered first.
FORGEML_WITH_TOYS = [
    sys.executable,
    "-c",
    "import toy_stages; from forgeml.cli.app import main; main()",
]
GROUPS = ["data", "tokenizer", "train", "eval", "models", "serve", "run", "runs", "artifacts",
          "lineage", "reproduce", "audit", "stages", "init", "export", "jobs", "quickstart", "monitor", "admin", "deploy", "plan", "batch", "classify"]  # fmt: skip


def cli(workspace: Path, *args: str, ok: bool = True):
    result = runner.invoke(app, ["--workspace", str(workspace), *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def forgeml(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FORGEML_WITH_TOYS, *args], capture_output=True, text=True, check=False)


RECIPE = """\
name: cli-demo
steps:
  - name: docs
    uses: toy.write
    with: {text: "alpha beta gamma"}
  - name: model
    uses: toy.train
    with: {name: helpdesk, steps: 3}
    inputs: {dataset: docs}
"""


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_has_real_help(group):
    result = runner.invoke(app, [group, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.split()) > 8


def test_version_and_init(tmp_path):
    assert runner.invoke(app, ["--version"]).output.strip() == f"forgeml {__version__}"
    result = cli(tmp_path / "ws", "--json", "init")
    assert json.loads(result.output)["workspace"] == str((tmp_path / "ws").resolve())
    assert (tmp_path / "ws" / "registry.db").exists()


def test_recipe_to_lineage_through_the_cli(tmp_path):
    ws = tmp_path / "ws"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    plan = json.loads(cli(ws, "--json", "run", str(recipe), "--dry-run").output)
    assert [s["action"] for s in plan["steps"]] == ["run", "run"]
    first = json.loads(cli(ws, "--json", "run", str(recipe)).output)
    assert [s["action"] for s in first["steps"]] == ["run", "run"]
    again = json.loads(cli(ws, "--json", "run", str(recipe)).output)
    assert [s["action"] for s in again["steps"]] == ["reuse", "reuse"]

    artifacts = json.loads(cli(ws, "--json", "artifacts", "list").output)
    assert sorted(a["kind"] for a in artifacts) == ["dataset", "model"]
    shown = json.loads(cli(ws, "--json", "artifacts", "show", "helpdesk").output)
    assert shown["kind"] == "model" and shown["files"][0]["path"] == "weights.json"

    runs = json.loads(cli(ws, "--json", "runs", "list").output)
    assert {r["status"] for r in runs} == {"succeeded"}
    detail = json.loads(cli(ws, "--json", "runs", "show", runs[1]["id"]).output)
    assert detail["inputs"][0]["role"] == "dataset" and detail["outputs"][0]["role"] == "model"
    assert [e["kind"] for e in detail["events"]].count("metric") == 3

    up = json.loads(cli(ws, "--json", "lineage", "helpdesk").output)
    assert up["run"]["stage"] == "toy.train" and up["inputs"][0]["kind"] == "dataset"
    down = json.loads(cli(ws, "--json", "lineage", up["inputs"][0]["ref"], "--down").output)
    assert [a["ref"] for a in down["affected"]] == [up["ref"]]
    assert "helpdesk:1" in cli(ws, "lineage", "helpdesk").output

    cli(ws, "models", "alias", "helpdesk", "1", "prod", "--reason", "first release")
    versions = json.loads(cli(ws, "--json", "models", "list").output)
    assert versions[0]["aliases"] == ["prod"]
    audit = json.loads(cli(ws, "--json", "audit", "--action", "alias.").output)
    assert audit[0]["details"]["reason"] == "first release"

    reproduced = json.loads(cli(ws, "--json", "reproduce", "helpdesk@prod").output)
    assert reproduced["ok"] and len(reproduced["artifacts"]) == 2
    assert json.loads(cli(ws, "--json", "artifacts", "verify").output)["problems"] == {}


def test_user_errors_exit_2_with_message_and_hint_and_no_traceback(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(RECIPE.replace("steps: 3", "steps: lots"))
    result = forgeml("--workspace", str(tmp_path / "ws"), "run", str(recipe))
    assert result.returncode == 2
    assert (
        f"error: {recipe}:8: steps[1].with.steps: Input should be a valid integer" in result.stderr
    )
    assert "Traceback" not in result.stderr

    missing = forgeml("--workspace", str(tmp_path / "nowhere"), "artifacts", "list")
    assert missing.returncode == 2
    assert (
        "no forgeml workspace at" in missing.stderr
        and "hint: Create one with `forgeml init`" in missing.stderr
    )

    debug = forgeml("--workspace", str(tmp_path / "nowhere"), "--debug", "artifacts", "list")
    assert debug.returncode == 2 and "Traceback" in debug.stderr


INSTALLED_FORGEML = str(Path(sys.executable).parent / "forgeml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["artifacts", "list", "--jsn"], "No such option: --jsn"),
        (["models", "show", "x"], "No such command 'show'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["data", "forget"], "Missing argument"),
        (["keys", "create"], "Missing option '--name'"),
        (["artifacts", "list", "--limit", "many"], "Invalid value for '--limit'"),
    ],
)
def test_usage_errors_print_usage_and_exit_2_from_the_installed_script(tmp_path, args, message):
    # Runs the console script pip installed, so the click/typer versions are the ones a
    # user's fresh install resolves (typer 0.29 vendors its own click).
    result = subprocess.run(
        [INSTALLED_FORGEML, "--workspace", str(tmp_path / "ws"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Usage: forgeml" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_workspace_from_environment_and_json_everywhere(tmp_path):
    env = {**os.environ, "FORGEML_WORKSPACE": str(tmp_path / "envws")}
    result = subprocess.run(
        [*FORGEML, "--json", "init"], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(result.stdout)["workspace"] == str(tmp_path / "envws")
    listed = subprocess.run(
        [*FORGEML, "--json", "runs", "list"], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(listed.stdout) == []


def test_sigterm_marks_the_run_interrupted(tmp_path):
    """A polite kill (SIGTERM) of `forgeml run` records the run as interrupted."""
    ws = tmp_path / "ws"
    script = textwrap.dedent(
        f"""
        import sys, time
        import toy_stages
        from forgeml.core.context import StageContext
        original = StageContext.metric
        def slow(self, step, **values):
            original(self, step, **values)
            print("step", step, flush=True)
            time.sleep(30)
        StageContext.metric = slow
        from forgeml.cli.app import main
        main(["--workspace", {str(ws)!r}, "run", {str(tmp_path / "r.yaml")!r}])
        """
    )
    (tmp_path / "r.yaml").write_text(RECIPE)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    lines = iter(process.stdout.readline, "")
    assert any(line.startswith("step 1") for line in lines)
    process.terminate()
    assert process.wait(timeout=30) == 143
    runs = json.loads(cli(ws, "--json", "runs", "list", "--stage", "toy.train").output)
    assert runs[0]["status"] == "interrupted"


def test_cli_start_up_does_not_import_torch():
    """`forgeml --help` and data commands stay fast: heavy libraries load only when used."""
    code = "import sys, forgeml.cli.app; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
