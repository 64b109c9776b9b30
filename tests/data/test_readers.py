"""Document readers: every format, encodings, rejections, determinism and streaming."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forgeml.core.errors import InputError
from forgeml.data.readers import (
    Document,
    ReadOptions,
    Rejection,
    iter_documents,
    list_sources,
)
from forgeml.data.readers.parquet import BATCH_ROWS


def read(*paths: Path, **options) -> tuple[list[Document], list[Rejection]]:
    items = list(iter_documents(list(paths), **options))
    documents = [item for item in items if isinstance(item, Document)]
    rejections = [item for item in items if isinstance(item, Rejection)]
    assert len(documents) + len(rejections) == len(items)
    return documents, rejections


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A minimal valid PDF with one Helvetica text line per page ("" makes a blank page)."""
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",  # the page tree, filled in once the page numbers are known
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids = []
    for text in pages:
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        content = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode() if text else b""
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % len(objects)
        )
        kids.append(len(objects))
    refs = " ".join(f"{kid} 0 R" for kid in kids)
    objects[1] = f"<< /Type /Pages /Kids [{refs}] /Count {len(kids)} >>".encode()
    info = ""
    if title:
        objects.append(f"<< /Title ({title}) >>".encode())
        info = f" /Info {len(objects)} 0 R"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R{info} >>"
    out += f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


# -- plain text and markdown --------------------------------------------------------------


def test_txt_document_has_stable_id_sha256_and_normalised_newlines(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"\xef\xbb\xbfFirst line\r\nSecond line\r\n")
    (document,), rejections = read(path)
    assert rejections == []
    assert document.text == "First line\nSecond line\n"  # BOM gone, CRLF -> LF
    assert document.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert document.metadata == {"format": "txt", "encoding": "utf-8"}
    (again,), _ = read(path)
    assert again.id == document.id
    assert document.to_record()["id"] == document.id


def test_markdown_title_from_front_matter_or_first_heading(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("---\ntitle: Leave policy\ntags: [hr]\n---\n# Other\nBody.\n")
    (tmp_path / "b.md").write_text("```\n# a comment in code\n```\nIntro\n\n## Real heading ##\n")
    (tmp_path / "c.md").write_text("Setext title\n============\n\ntext\n")
    (tmp_path / "d.md").write_text("no heading at all\n")
    documents, _ = read(tmp_path)
    titles = [d.metadata.get("title") for d in documents]
    assert titles == ["Leave policy", "Real heading", "Setext title", None]
    assert documents[0].text == "# Other\nBody.\n"  # front matter is not prose


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("  \n\n")
    documents, (rejection,) = read(tmp_path / "empty.txt")
    assert documents == []
    assert "no text" in rejection.reason


# -- encodings ------------------------------------------------------------------------------


def test_cp1252_file_is_decoded_with_a_recorded_fallback(tmp_path: Path) -> None:
    text = "Café crème — “naïve” résumé, 25€"
    (tmp_path / "legacy.txt").write_bytes(text.encode("cp1252"))
    (document,), _ = read(tmp_path / "legacy.txt")
    assert document.text == text
    assert document.metadata["encoding"] == "cp1252"
    assert document.metadata["encoding_fallback"] is True


def test_non_utf8_is_rejected_without_a_fallback(tmp_path: Path) -> None:
    (tmp_path / "legacy.txt").write_bytes("Café".encode("cp1252"))
    documents, (rejection,) = read(tmp_path / "legacy.txt", fallback_encoding=None)
    assert documents == []
    assert "not valid UTF-8" in rejection.reason
    assert "fallback_encoding" in (rejection.hint or "")


def test_text_that_would_be_mojibake_is_rejected_not_guessed(tmp_path: Path) -> None:
    (tmp_path / "ru.txt").write_bytes("Привет, это документ о политике отпусков.".encode("cp1251"))
    _, (rejection,) = read(tmp_path / "ru.txt")
    assert "garbled" in rejection.reason
    (document,), _ = read(tmp_path / "ru.txt", fallback_encoding="cp1251")
    assert document.text.startswith("Привет")


def test_utf16_with_bom_is_read(tmp_path: Path) -> None:
    (tmp_path / "u.txt").write_text("Grüße", encoding="utf-16")
    (document,), _ = read(tmp_path / "u.txt")
    assert (document.text, document.metadata["encoding"]) == ("Grüße", "utf-16")


def test_unknown_fallback_encoding_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown encoding"):
        ReadOptions(fallback_encoding="klingon-8")
    with pytest.raises(InputError) as raised:
        read(tmp_path, fallback_encoding="klingon-8")
    assert str(raised.value) == "fallback_encoding: unknown encoding 'klingon-8'"


# -- html -----------------------------------------------------------------------------------

PAGE = """<!doctype html><html><head><title>Annual leave | ACME intranet</title>
<style>body {{ color: red }}</style><script>trackVisitor("secret-script-text");</script></head>
<body><nav><a href="/">Home</a> <a href="/about">About us</a> <a href="/jobs">Careers</a></nav>
<header><div class="logo">ACME Corp header banner</div></header>
<main><article><h1>Annual leave</h1>
<p>Employees accrue twenty-five days of annual leave per calendar year, pro rata.</p>
<p>Requests go through the HR portal at least two weeks before the first day off.</p>
<p>{extra}</p></article></main>
<aside>Related: parking policy, canteen menu</aside>
<footer>Copyright 2024 ACME Corp. All rights reserved. Privacy notice.</footer></body></html>"""


def test_html_main_text_kept_and_boilerplate_dropped(tmp_path: Path) -> None:
    (tmp_path / "leave.html").write_text(PAGE.format(extra="Unused days carry over."))
    (document,), _ = read(tmp_path / "leave.html")
    assert "twenty-five days of annual leave" in document.text
    assert "Unused days carry over." in document.text
    for boilerplate in ("Home", "Careers", "header banner", "parking", "Copyright", "secret"):
        assert boilerplate not in document.text
    assert document.metadata["title"] == "Annual leave | ACME intranet"


def test_html_without_main_text_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "menu.html").write_text("<html><body><nav>Home | About</nav></body></html>")
    documents, (rejection,) = read(tmp_path / "menu.html")
    assert documents == []
    assert "no text" in rejection.reason


def test_html_uses_its_declared_charset_for_legacy_bytes(tmp_path: Path) -> None:
    page = PAGE.format(extra="Отпуск переносится на следующий год.").replace(
        "<head>", '<head><meta charset="windows-1251">'
    )
    (tmp_path / "ru.htm").write_bytes(page.encode("cp1251"))
    (document,), _ = read(tmp_path / "ru.htm")
    assert "Отпуск переносится" in document.text
    assert document.metadata["encoding"] == "cp1251"


# -- pdf --------------------------------------------------------------------------------------


def test_pdf_gives_one_document_per_page_and_rejects_blank_pages(tmp_path: Path) -> None:
    path = tmp_path / "handbook.pdf"
    path.write_bytes(make_pdf(["Page one text", "", "Page three text"], title="Handbook"))
    documents, (blank,) = read(path)
    assert [d.text.strip() for d in documents] == ["Page one text", "Page three text"]
    assert [d.metadata["page"] for d in documents] == [1, 3]
    assert {d.metadata["pages"] for d in documents} == {3}
    assert documents[0].metadata["title"] == "Handbook"
    assert len({d.id for d in documents}) == 2
    assert blank.field == "page 2"
    assert "no extractable text" in blank.reason


def test_corrupt_pdf_is_rejected_and_strict_raises(tmp_path: Path) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(make_pdf(["fine"])[:60])
    documents, (rejection,) = read(path)
    assert documents == []
    assert "not a readable pdf" in rejection.reason
    with pytest.raises(InputError, match=r"broken\.pdf: not a readable pdf"):
        read(path, strict=True)


def test_password_protected_pdf_is_rejected_but_owner_only_lock_is_read(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    for name, user_password in (("locked.pdf", "pw"), ("restricted.pdf", "")):
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf([f"{name} text"]))))
        writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
        with (tmp_path / name).open("wb") as stream:
            writer.write(stream)
    documents, (rejection,) = read(tmp_path)
    assert rejection.source.endswith("locked.pdf")
    assert rejection.reason == "the pdf is encrypted"
    assert [d.text for d in documents] == ["restricted.pdf text"]


# -- jsonl ------------------------------------------------------------------------------------


def test_jsonl_rejects_bad_lines_with_line_numbers_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"text": "first", "lang": "en", "id": 7}),
                "{not json",
                "[1, 2]",
                json.dumps({"body": "wrong field"}),
                json.dumps({"text": 42}),
                json.dumps({"text": "   "}),
                "",
                json.dumps({"text": "last"}),
            ]
        )
        + "\n"
    )
    documents, rejections = read(path, metadata_fields=["lang"])
    assert [d.text for d in documents] == ["first", "last"]
    assert [d.metadata["line"] for d in documents] == [1, 8]
    assert documents[0].metadata["lang"] == "en"
    assert "id" not in documents[0].metadata  # only the fields asked for
    assert [(r.line, r.field) for r in rejections] == [
        (2, None),
        (3, None),
        (4, "text"),
        (5, "text"),
        (6, "text"),
    ]
    assert str(rejections[0]).startswith(f"{path}:2: not valid JSON")
    assert "fields present: body" in rejections[2].reason
    assert rejections[3].reason == "expected a string; got a number"


def test_jsonl_custom_text_field_and_strict_mode(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"body": "one"}\n{"body": null}\n{"body": "three"}\n')
    documents, rejections = read(path, text_field="body")
    assert [d.text for d in documents] == ["one", "three"]
    assert len(rejections) == 1
    with pytest.raises(InputError) as raised:
        read(path, text_field="body", strict=True)
    assert str(raised.value) == f"{path}:2: body: expected a string; got null"


def test_chat_records_round_trip_as_messages(tmp_path: Path) -> None:
    record = {
        "messages": [
            {"role": "user", "content": "What is the leave allowance?"},
            {"role": "assistant", "content": "25 days.", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
    }
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (document,), _ = read(path)
    assert document.messages == record["messages"]
    assert document.metadata["tools"] == record["tools"]
    assert document.text == "What is the leave allowance?\n\n25 days."
    assert document.to_record()["messages"] == record["messages"]


def test_jsonl_gz_hashes_the_compressed_bytes(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as stream:
        stream.write('{"text": "zipped"}\n')
    (document,), _ = read(path)
    assert document.text == "zipped"
    (source,) = list_sources([path])
    assert (source.format, source.compressed) == ("jsonl", True)
    assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert source.size_bytes == path.stat().st_size


def test_truncated_gzip_keeps_what_was_read_and_reports_the_rest(tmp_path: Path) -> None:
    lines = "".join(json.dumps({"text": f"line {i} " + "x" * 50}) + "\n" for i in range(2000))
    data = gzip.compress(lines.encode(), mtime=0)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    documents, rejections = read(path)
    assert 0 < len(documents) < 2000
    assert len(rejections) == 1
    assert "truncated or corrupt" in rejections[0].reason


def test_jsonl_mixed_encodings_decoded_per_line(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    utf8 = json.dumps({"text": "déjà vu"}, ensure_ascii=False).encode("utf-8")
    legacy = json.dumps({"text": "Café crème"}, ensure_ascii=False).encode("cp1252")
    path.write_bytes(utf8 + b"\n" + legacy + b"\n")
    first, second = read(path)[0]
    assert (first.text, first.metadata["encoding"]) == ("déjà vu", "utf-8")
    assert (second.text, second.metadata["encoding"]) == ("Café crème", "cp1252")
    assert second.metadata["encoding_fallback"] is True


def test_jsonl_is_streamed_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    line = json.dumps({"text": "w" * 2000}) + "\n"
    path.write_text(line * 2000)  # ~4 MB
    tracemalloc.start()
    try:
        count = sum(1 for item in iter_documents([path]) if isinstance(item, Document))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 2000
    assert peak < 1_000_000, f"peak {peak} bytes: the file was loaded whole"


# -- csv ----------------------------------------------------------------------------------------


def test_csv_rows_with_multiline_cells_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text(
        'id,text\n1,"A cell\nover two lines"\n\n2,plain\n3\n4,""\n5,"last, with comma"\n'
    )
    documents, rejections = read(path, metadata_fields=["id"])
    assert [d.text for d in documents] == ["A cell\nover two lines", "plain", "last, with comma"]
    assert [(d.metadata["row"], d.metadata["line"]) for d in documents] == [(0, 2), (1, 5), (4, 8)]
    assert [d.metadata["id"] for d in documents] == ["1", "2", "5"]
    assert [(r.line, r.reason) for r in rejections] == [
        (6, "expected 2 fields as in the header; got 1"),
        (7, "empty text"),
    ]


def test_csv_semicolon_export_and_missing_column(tmp_path: Path) -> None:
    (tmp_path / "eu.csv").write_text("nr;text\n1;Grüße aus Wien\n", encoding="utf-8-sig")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    documents, (rejection,) = read(tmp_path / "eu.csv", tmp_path / "other.csv")
    assert [d.text for d in documents] == ["Grüße aus Wien"]
    assert rejection.field == "text"
    assert "columns: a, b" in rejection.reason


def test_csv_encodings_utf16_excel_export_and_legacy_rows(tmp_path: Path) -> None:
    # Excel's "Unicode text" export: UTF-16 with a BOM, tab-separated.
    (tmp_path / "a.csv").write_text("text\tlang\nGrüße\tde\n", encoding="utf-16")
    (tmp_path / "b.csv").write_bytes("text\nCafé crème\nplain\n".encode("cp1252"))
    documents, rejections = read(tmp_path)
    assert rejections == []
    assert [(d.text, d.metadata["encoding"]) for d in documents] == [
        ("Grüße", "utf-16"),
        ("Café crème", "cp1252"),
        ("plain", "utf-8"),
    ]


def test_csv_undecodable_line_is_reported_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"text\nfirst\ncaf\xe9\nthird\n")
    documents, (rejection,) = read(path, fallback_encoding=None)
    assert [(d.text, d.metadata["line"]) for d in documents] == [("first", 2), ("third", 4)]
    assert (rejection.line, rejection.reason) == (3, "not valid UTF-8 (byte 3)")


# -- parquet -------------------------------------------------------------------------------------


def test_parquet_read_in_batches_with_null_and_empty_rows(tmp_path: Path) -> None:
    count = BATCH_ROWS * 2 + 5
    texts = [f"row {i}" for i in range(count)]
    texts[3], texts[BATCH_ROWS + 1] = None, ""
    table = pa.table({"text": texts, "lang": ["en"] * count, "blob": [b"x"] * count})
    path = tmp_path / "big.parquet"
    pq.write_table(table, path, row_group_size=500)
    documents, rejections = read(path, metadata_fields=["lang", "missing"])
    assert len(documents) == count - 2
    assert documents[-1].metadata == {"format": "parquet", "row": count - 1, "lang": "en"}
    assert [r.field for r in rejections] == ["row 3", f"row {BATCH_ROWS + 1}"]
    assert len({d.id for d in documents}) == len(documents)


def test_parquet_wrong_column_type_or_name_and_gz(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    pq.write_table(pa.table({"body": ["a"]}), tmp_path / "named.parquet")
    plain = tmp_path / "ok.parquet"
    pq.write_table(pa.table({"text": ["compressed parquet"]}), plain)
    (tmp_path / "ok.parquet.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    documents, rejections = read(tmp_path)
    assert [d.text for d in documents] == ["compressed parquet"]
    reasons = {Path(r.source).name: r.reason for r in rejections}
    assert reasons["ints.parquet"] == "expected a string column; got int64"
    assert "columns: body" in reasons["named.parquet"]
    assert "not a readable parquet file" in reasons["junk.parquet"]


# -- directories ----------------------------------------------------------------------------------


def test_directory_walk_is_sorted_skips_hidden_and_reports_unsupported(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("z")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "C.TXT").write_text("upper-case suffix")
    (tmp_path / ".secret.txt").write_text("hidden")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config.txt").write_text("hidden dir")
    (tmp_path / "logo.svg").write_bytes(b"<svg/>")
    documents, (unsupported,) = read(tmp_path)
    assert [d.text for d in documents] == ["upper-case suffix", "a", "z"]
    assert unsupported.source.endswith("logo.svg")
    assert unsupported.reason == "unsupported file type"
    # Files of a directory before its subdirectories; a path named twice is listed once.
    names = [s.path.name for s in list_sources([tmp_path, tmp_path / "a.txt"])]
    assert names == ["C.TXT", "a.txt", "logo.svg", "z.txt"]


def test_explicit_hidden_file_is_read_and_missing_path_raises(tmp_path: Path) -> None:
    (tmp_path / ".notes.txt").write_text("asked for by name")
    (document,), _ = read(tmp_path / ".notes.txt")
    assert document.text == "asked for by name"
    with pytest.raises(InputError, match="no such file or directory"):
        read(tmp_path / "nope")


def test_documents_name_their_file_from_what_was_named_not_where_it_lies(tmp_path: Path) -> None:
    for folder in (tmp_path / "a", tmp_path / "somewhere" / "much" / "deeper"):
        (folder / "docs" / "faq").mkdir(parents=True)
        (folder / "docs" / "faq" / "billing.md").write_text("# Billing\n\nPay monthly.")
        (folder / "tickets.jsonl").write_text('{"text": "My order is late."}\n')
    records = [
        [d.to_record() for d in read(folder / "docs", folder / "tickets.jsonl")[0]]
        for folder in (tmp_path / "a", tmp_path / "somewhere" / "much" / "deeper")
    ]
    assert [r["source"] for r in records[0]] == ["docs/faq/billing.md", "tickets.jsonl"]
    assert records[0] == records[1]  # the same bytes wherever the files lie
    # Where a file lies stays in what the caller records for lineage.
    (source,) = list_sources([tmp_path / "a" / "docs"])
    assert source.path == tmp_path / "a" / "docs" / "faq" / "billing.md"
    assert source.name == "docs/faq/billing.md"
