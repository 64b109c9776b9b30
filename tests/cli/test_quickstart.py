"""`forgeml quickstart` end to end at tiny size: every step of the lifecycle runs once,
the model is gated, carded, served and chatted with; a rerun reuses everything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from forgeml.cli.app import app
from forgeml.cli.quickstart import EVAL_STEPS

ROOT = Path(__file__).resolve().parents[2]

runner = CliRunner()
# The recipe's full schedule takes minutes; the same recipe with a few steps each.
SHORT = ["--pretrain-steps", "12", "--sft-steps", "12", "--dpo-steps", "2", "--grpo-steps", "2",
         "--no-collapse-check"]  # fmt: skip
STAGES = [
    "data.ingest", "data.ingest", "data.assess", "data.clean", "data.mix", "tokenizer.train",
    "train.pretrain", "data.ingest", "train.sft", "data.ingest", "train.preference",
    "data.ingest", "train.rl", "eval.run", "eval.run", "eval.run", "eval.run", "export.model",
]  # fmt: skip


def invoke(workspace: Path, *args: str) -> dict:
    result = runner.invoke(app, ["--workspace", str(workspace), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_quickstart_runs_the_lifecycle_then_reuses_everything(tmp_path):
    workspace = tmp_path / "ws"
    first = invoke(workspace, "quickstart", *SHORT)
    assert [s["stage"] for s in first["steps"]] == STAGES
    assert {s["action"] for s in first["steps"]} == {"run"}

    # Base vs every stage, side by side, on held-out tickets and held-out text.
    assert list(first["evals"]) == list(EVAL_STEPS.values())
    for metrics in first["evals"].values():
        assert 0 <= metrics["routing (JSON exact)"] <= 1
        assert metrics["bits/byte"] > 0

    # The gates decide the promotion, and what is served follows from it.
    release = first["release"]
    assert release["model"] == "quickstart-router:1"
    final = first["evals"]["+ GRPO"]
    should_pass = final["routing (JSON exact)"] >= 0.6 and final["valid JSON"] >= 0.95
    assert release["promoted"] == should_pass
    if release["promoted"]:
        assert release["serve_ref"] == "quickstart-router@prod"
    else:
        assert "eval-routing/json_" in release["detail"]
        assert release["serve_ref"] == "quickstart-router:1"
    card = Path(release["card"]).read_text()
    assert card.startswith("# Model card: quickstart-router:1")
    assert Path(first["report"]).is_file()
    assert list(first["loss_curves"]) == ["pretrain", "sft", "dpo", "grpo"]
    assert all(Path(curve).is_file() for curve in first["loss_curves"].values())

    # The served model answered the openai client, once plainly and once with a tool.
    exchanges = first["demo"]["exchanges"]
    assert [e["request"] for e in exchanges] == ["chat", "chat + tools"]
    assert all(e["finish_reason"] in ("stop", "length", "tool_calls") for e in exchanges)
    assert first["demo"]["url"].startswith("http://127.0.0.1:")

    # The served model is traceable to the raw files it came from.
    lineage = invoke(workspace, "lineage", release["serve_ref"])
    sources = json.dumps(lineage)
    assert "tickets.jsonl" in sources and "sft.jsonl" in sources

    # The README's "why" for unseen phrasings runs on a quickstart workspace.
    why = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "unseen_vocabulary.py"),
                          "--workspace", str(workspace)], capture_output=True, text=True)  # fmt: skip
    assert why.returncode == 0, why.stderr
    assert why.stdout.startswith("80 unseen tickets") and "words in no training text" in why.stdout

    again = invoke(workspace, "quickstart", *SHORT)
    assert {s["action"] for s in again["steps"]} == {"reuse"}
    assert [s["outputs"] for s in again["steps"]] == [s["outputs"] for s in first["steps"]]
    assert again["evals"] == first["evals"]

    helpdesk = next(s for s in first["steps"] if s["name"] == "helpdesk")
    run = invoke(workspace, "runs", "show", helpdesk["run_id"])
    assert run["metrics"]["rejected"] == 1  # the corrupt scan is reported, not dropped
    assert run["metrics"]["rejections"][0]["source"].endswith("scan-corrupt.pdf")
