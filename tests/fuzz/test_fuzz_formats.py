"""Fuzzing the training-data readers: any file is either accepted or rejected with the
line (and field) of each problem; nothing else escapes (the CLI prints a ForgeError
without a traceback, anything else is a crash)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from fuzz_settings import fuzz
from hypothesis import given
from hypothesis import strategies as st

from forgeml.core.errors import InputError
from forgeml.data.formats.validate import ensure_valid_jsonl, iter_normalized, validate_jsonl

FORMATS = [None, "text", "chat", "preference", "prompt"]
KEYS = ["messages", "role", "content", "text", "prompt", "completion", "chosen", "rejected",
        "tools", "tool_calls", "name", "arguments", "function", "type", "weight", "input",
        "preferred_output", "non_preferred_output", "tool_call_id", "id", "reasoning"]  # fmt: skip
ROLES = ["system", "user", "assistant", "tool", "developer", "bot", ""]

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
scalars |= st.sampled_from(ROLES)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)
lines = st.one_of(
    json_values.map(json.dumps),
    st.text(max_size=60),  # not JSON at all
    st.sampled_from(["", "   ", "{", "[1,", '{"messages": [}', "\ufeff{}", "NaN"]),
)
LOCATED = re.compile(r"\.jsonl(\.gz)?(:\d+)?: ")


def check_file(path: Path, expected_format: str | None) -> None:
    report = validate_jsonl(path, expected_format)
    assert report.valid + len({e.line for e in report.errors}) <= max(report.records, 1)
    for error in report.errors:
        assert error.message and str(error).startswith(str(path))
    try:
        ensure_valid_jsonl(path, expected_format)
        records = list(iter_normalized(path, expected_format))
        assert len(records) == report.valid == report.records
    except InputError as exc:
        assert not report.ok
        assert LOCATED.search(exc.message), exc.message


@fuzz
@given(lines=st.lists(lines, min_size=0, max_size=6), expected=st.sampled_from(FORMATS))
def test_any_jsonl_is_accepted_or_rejected_with_its_line(tmp_path_factory, lines, expected):
    path = tmp_path_factory.mktemp("fuzz") / "train.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    check_file(path, expected)


@fuzz
@given(payload=st.binary(max_size=200), expected=st.sampled_from(FORMATS), gz=st.booleans())
def test_any_bytes_are_accepted_or_rejected_with_a_location(
    tmp_path_factory, payload, expected, gz
):
    # Invalid UTF-8, truncated gzip, NUL bytes: the reader names the file, never crashes.
    path = tmp_path_factory.mktemp("fuzz") / ("train.jsonl.gz" if gz else "train.jsonl")
    path.write_bytes(gzip.compress(payload)[: max(1, len(payload))] if gz else payload)
    check_file(path, expected)
