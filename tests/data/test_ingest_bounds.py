"""`forgeml data ingest` bounds what it decompresses: a gzip bomb, or a jsonl line of
megabytes, is rejected with the file (and line) named before it can fill memory, and the
good files beside it still make the dataset."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

FORGEML = str(Path(sys.executable).parent / "forgeml")


def ingest(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FORGEML, "--workspace", str(workspace), "--json", "data", "ingest", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def write_bomb(path: Path, megabytes: int) -> None:
    """`megabytes` of text that gzip squeezes into a few KB."""
    with gzip.open(path, "wb", compresslevel=9) as out:
        for _ in range(megabytes):
            out.write(b"a" * (1 << 20))


def test_a_gzip_bomb_and_a_huge_line_are_rejected_and_the_rest_is_kept(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_bomb(corpus / "bomb.txt.gz", 8)
    assert (corpus / "bomb.txt.gz").stat().st_size < 64 << 10
    lines = [{"text": "a fine first record about parcels"}, {"text": "b" * (3 << 20)}]
    (corpus / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (corpus / "note.txt").write_text("A short note that is well within every limit.\n")

    result = ingest(tmp_path / "ws", str(corpus), "--max-file-mb", "2")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["documents"] == 2  # the note and the jsonl's first record
    rejected = {Path(r["source"]).name: r for r in metrics["rejections"]}
    assert set(rejected) == {"bomb.txt.gz", "records.jsonl"}
    assert "larger than 2 MiB once decompressed" in rejected["bomb.txt.gz"]["reason"]
    assert rejected["records.jsonl"]["line"] == 2
    assert "max_file_mb" in rejected["records.jsonl"]["reason"]


def test_the_default_limit_reads_the_same_files_whole(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_bomb(corpus / "big.txt.gz", 3)
    result = ingest(tmp_path / "ws", str(corpus))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["metrics"]["documents"] == 1


def test_a_limit_out_of_range_is_refused_with_the_field(tmp_path):
    (tmp_path / "note.txt").write_text("hello there\n")
    result = ingest(tmp_path / "ws", str(tmp_path / "note.txt"), "--max-file-mb", "0")
    assert result.returncode == 2
    assert "max_file_mb" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
