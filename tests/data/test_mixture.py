"""data.mix: weights, up/down-sampling, validation split by document, determinism."""

from __future__ import annotations

import json

import pytest

from forgeml.core.errors import InputError
from forgeml.core.runs import run_stage
from forgeml.data.dataset import iter_records


def _dataset(workspace, tmp_path, name: str, count: int, words: int):
    folder = tmp_path / name
    folder.mkdir(parents=True)
    for index in range(count):
        (folder / f"{index:03d}.txt").write_text(f"{name} document {index} " + "word " * words)
    return run_stage(workspace, "data.ingest", {"paths": [str(folder)], "name": name}).outputs[
        "dataset"
    ]


@pytest.fixture
def sources(workspace, tmp_path):
    return _dataset(workspace, tmp_path, "big", 60, 50), _dataset(
        workspace, tmp_path, "small", 10, 50
    )


def _mix(workspace, sources, seed=0, **params):
    return run_stage(workspace, "data.mix", params, {"datasets": list(sources)}, seed=seed).outputs[
        "mixture"
    ]


def _split(workspace, mixture, split):
    return list(iter_records(workspace.root / mixture.path / split))


def test_weights_upsample_the_small_source_and_record_epochs(workspace, sources):
    mixture = _mix(workspace, sources, weights=[0.5, 0.5], validation_fraction=0.1)
    manifest = json.loads((workspace.root / mixture.path / "mixture.json").read_text())
    big, small = manifest["components"]
    assert big["weight"] == small["weight"] == 0.5
    assert small["epochs"] > 3  # repeated
    assert 0.5 < big["epochs"] < 1  # sub-sampled
    train = _split(workspace, mixture, "train")
    chars = {"big": 0, "small": 0}
    for row in train:
        chars[row["source"].split("/")[-2]] += len(row["text"])
    assert abs(chars["big"] / chars["small"] - 1) < 0.1
    assert len({row["id"] for row in train}) == len(train)  # repeats get distinct ids
    small_ids = [r["id"].split("#")[0] for r in train if r["source"].split("/")[-2] == "small"]
    distinct = len(set(small_ids))
    # Copies go a whole pass apart: every run of `distinct` rows holds each document once.
    for start in range(0, len(small_ids) - distinct + 1, distinct):
        assert len(set(small_ids[start : start + distinct])) == distinct


def test_validation_is_held_out_by_document_and_never_trained_on(workspace, sources):
    mixture = _mix(workspace, sources, validation_fraction=0.2)
    train_ids = {row["id"].split("#")[0] for row in _split(workspace, mixture, "train")}
    validation_ids = {row["id"] for row in _split(workspace, mixture, "validation")}
    assert validation_ids and not (train_ids & validation_ids)
    sources_held = {
        row["source"].split("/")[-2] for row in _split(workspace, mixture, "validation")
    }
    assert sources_held == {"big", "small"}  # even the small source keeps a validation signal


def test_token_budget_and_determinism(workspace, sources):
    first = _mix(workspace, sources, tokens=5000, weights=[3, 1])
    manifest = json.loads((workspace.root / first.path / "mixture.json").read_text())
    chars = manifest["train"]["characters"]
    assert 5000 * 4 <= chars <= 5000 * 4 * 1.1
    again = run_stage(
        workspace,
        "data.mix",
        {"tokens": 5000, "weights": [3, 1]},
        {"datasets": list(sources)},
        force=True,
    )
    assert again.outputs["mixture"].sha256 == first.sha256
    assert _mix(workspace, sources, seed=1, tokens=5000, weights=[3, 1]).sha256 != first.sha256


def test_bad_weights_are_refused(workspace, sources):
    with pytest.raises(InputError, match="expected 2 positive numbers"):
        _mix(workspace, sources, weights=[1.0])


def test_mix_from_the_command_line(workspace, sources):
    from typer.testing import CliRunner

    from forgeml.cli.app import app

    runner = CliRunner()
    args = [
        "--workspace",
        str(workspace.root),
        "--json",
        "data",
        "mix",
        "big=0.25",
        "small=0.75",
        "--name",
        "blend",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)
    assert made["outputs"]["mixture"].startswith("mixture/")
    weights = [c["weight"] for c in made["metrics"]["components"]]
    assert weights == [0.25, 0.75]
    bad = runner.invoke(app, ["--workspace", str(workspace.root), "data", "mix", "big=lots"])
    assert isinstance(bad.exception, InputError) and "DATASET=WEIGHT" in str(bad.exception)


def test_the_same_files_in_another_folder_give_the_same_mixture(workspace, tmp_path):
    """Reproducible across machines: where the files sit changes lineage, not the bytes."""
    here = _dataset(workspace, tmp_path / "a", "docs", 30, 40)
    there = _dataset(workspace, tmp_path / "b-longer", "docs", 30, 40)
    assert here.sha256 == there.sha256  # rows name files from the folder given: docs/...
    rows = _split(workspace, _mix(workspace, [here], tokens=300), "train")
    assert rows[0]["source"].startswith("docs/"), rows[0]
    texts = [
        [
            (row["id"], row["text"])
            for row in _split(workspace, _mix(workspace, [d], tokens=300), "train")
        ]
        for d in (here, there)
    ]
    assert texts[0] == texts[1]


@pytest.mark.parametrize("buckets", [4, 1 << 16])
def test_the_fractional_pass_takes_the_first_documents_in_sampling_order(
    workspace, tmp_path, monkeypatch, buckets
):
    """The mix finds the fractional pass's documents in streaming passes (a histogram of
    the sampling order, then the one bucket where the characters run out), never holding
    every id; with 4 buckets most documents share the cut bucket. Either way it takes
    exactly what walking every train document in sampling order until the characters are
    reached takes."""
    from forgeml.data import mixture

    monkeypatch.setattr(mixture, "BUCKETS", buckets)
    folder = tmp_path / "varied"
    folder.mkdir()
    for index in range(40):
        (folder / f"{index:02d}.txt").write_text(f"note {index} " + "word " * (index * 7 % 31))
    dataset = run_stage(workspace, "data.ingest", {"paths": [str(folder)]}).outputs["dataset"]
    rows = list(iter_records(workspace.root / dataset.path))
    train = [r for r in rows if mixture._unit(5, r["id"], "validation") >= 0.1]
    total = sum(len(r["text"]) for r in train)
    target = int(2.4 * total)
    remainder, expected = target - 2 * total, set()
    for row in sorted(train, key=lambda r: mixture._unit(5, r["id"], "sample")):
        if remainder <= 0:
            break
        expected.add(row["id"])
        remainder -= len(row["text"])

    out = run_stage(workspace, "data.mix", {"tokens": target, "chars_per_token": 1, "validation_fraction": 0.1},
                    {"datasets": [dataset]}, seed=5).outputs["mixture"]  # fmt: skip
    written = [r["id"] for r in iter_records(workspace.root / out.path / "train")]
    assert {i for i in written if i.endswith("#2")} == {f"{i}#2" for i in expected}
    assert len(written) == 2 * len(train) + len(expected)
    assert 0 < len(expected) < len(train)
