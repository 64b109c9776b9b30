"""data.ingest of preference and prompt-only jsonl, with no options, keeps what
train.preference and train.rl read: the pairs, and a prompt's reference for the rewards."""

from __future__ import annotations

import json
from pathlib import Path

from forgeml.core.runs import run_stage
from forgeml.data.dataset import iter_records
from forgeml.train.finetune_data import load_records, preference_strings, prompt_row

ASK = {"role": "user", "content": "Where is ORD-12?"}
GOOD = {"role": "assistant", "content": "It has shipped."}
BAD = {"role": "assistant", "content": "No idea."}


def ingest(workspace, tmp_path: Path, lines: list[dict]):
    """The dataset artifact of a jsonl ingested with the defaults, as the job worker does."""
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = run_stage(workspace, "data.ingest", {"paths": [str(path)]}, quiet=True)
    assert result.metrics["rejected"] == 0, result.metrics["rejections"]
    return result.outputs["dataset"]


def ingested(workspace, tmp_path: Path, lines: list[dict]) -> Path:
    return workspace.root / ingest(workspace, tmp_path, lines).path


def test_preference_lines_in_every_shape(workspace, tmp_path):
    directory = ingested(
        workspace,
        tmp_path,
        [
            {"prompt": "Where is ORD-12?", "chosen": "It has shipped.", "rejected": "No idea."},
            {
                "input": {"messages": [ASK]},
                "preferred_output": [GOOD],
                "non_preferred_output": [BAD],
            },
            {"chosen": [ASK, GOOD], "rejected": [ASK, BAD]},  # the prompt is what they share
        ],
    )
    pairs = load_records(directory, "preference")
    assert len(pairs) == 3
    for pair in pairs:
        assert (pair["prompt"], pair["chosen"], pair["rejected"]) == ([ASK], [GOOD], [BAD])
    assert preference_strings(pairs[1], "auto")["chosen"] == "It has shipped.</s>"
    texts = [row["text"] for row in iter_records(directory)]
    assert all("Where is ORD-12?" in text and "It has shipped." in text for text in texts)


def test_prompt_lines_keep_their_reference(workspace, tmp_path):
    directory = ingested(
        workspace,
        tmp_path,
        [
            {"messages": [ASK], "reference": "It has shipped."},
            {"prompt": "Capital of France?", "reference_answer": "Paris", "id": 7},
        ],
    )
    first, second = load_records(directory, "prompt")
    assert json.loads(prompt_row(first, "auto")["item"]) == {"reference": "It has shipped."}
    assert second["prompt"] == [{"role": "user", "content": "Capital of France?"}]
    assert second["extra"] == {"reference_answer": "Paris", "id": 7}


def test_cleaning_redacts_the_kept_fields(workspace, tmp_path):
    dataset = ingest(
        workspace,
        tmp_path,
        [{"prompt": "Who do I write to?", "chosen": "Mail anna@example.com", "rejected": "No."}],
    )
    params = {"dedup": False, "quality": None, "workers": 1}
    cleaned = run_stage(workspace, "data.clean", params, {"dataset": dataset}, quiet=True)
    (pair,) = load_records(workspace.root / cleaned.outputs["dataset"].path, "preference")
    assert pair["chosen"][0]["content"] == "Mail <EMAIL>"
