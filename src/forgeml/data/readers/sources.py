"""Finding input files, fingerprinting them, opening them, and decoding their text.

Encoding policy (one rule for every text-based format):

1. A byte-order mark wins: UTF-8, UTF-16 or UTF-32 with a BOM is decoded as such.
2. Otherwise the text is UTF-8 if it decodes as UTF-8 — nearly all modern files.
3. Otherwise `fallback_encoding` (default cp1252, the usual legacy encoding of Western
   office documents) is tried, but only accepted when charset-normalizer judges the decoded
   text plausible in that encoding. cp1252 decodes almost any byte sequence, so without
   that check Cyrillic or Central European legacy files would become silent mojibake.
4. Anything else is rejected with the reason and a hint to convert the file or name its
   encoding. We do not guess among dozens of code pages: on short texts charset-normalizer
   picks cp775 or big5 for plain French or Russian, and a wrong guess is worse than a
   clear rejection.

The encoding used is recorded in each document's metadata (`encoding`), with
`encoding_fallback: true` when rule 3 applied.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from charset_normalizer import from_bytes

from forgeml.core.errors import InputError
from forgeml.data.readers.documents import SourceFile

FORMAT_BY_SUFFIX = {
    ".txt": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".jsonl": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    # Pictures, read only with `images` (readers/pictures.py); rejected with a hint otherwise.
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".webp": "image",
    ".gif": "image",
    ".bmp": "image",
}

_BOMS = (  # UTF-32 LE starts with the UTF-16 LE BOM, so it must be tried first
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CHUNK = 1 << 18

# Errors a damaged file or gzip stream can raise while being read.
READ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile)


class UndecodableText(Exception):
    """Text in an encoding the policy above does not accept."""

    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


def format_of(path: Path) -> tuple[str | None, bool]:
    """(format, gzip-compressed) from the file name, e.g. `notes.jsonl.gz` -> ("jsonl", True)."""
    name = path.name.lower()
    compressed = name.endswith(".gz")
    if compressed:
        name = name[: -len(".gz")]
    return FORMAT_BY_SUFFIX.get(Path(name).suffix), compressed


def find_files(paths: Sequence[str | Path]) -> list[Path]:
    """Every file under `paths` (see `find_named_files`), without their names."""
    return [path for path, _ in find_named_files(paths)]


def find_named_files(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(file, name) for every file under `paths`, directories walked recursively in sorted
    (deterministic) order.

    The name is the file's path relative to what was named, starting with the named
    directory's own name (`docs/a/b.md`), or the file name of a file named directly: the
    same files give the same names wherever they lie. Hidden files and directories (name
    starting with ".") inside a directory are skipped; a hidden file named explicitly is
    read. A path named twice is listed once. A missing path or an unreadable directory
    raises `InputError` before any work is done.
    """
    found: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            top = path.resolve().name
            candidates = [(f, PurePosixPath(top, *f.relative_to(path).parts)) for f in _walk(path)]
        elif path.exists():
            candidates = [(path, PurePosixPath(path.name))]
        else:
            raise InputError("no such file or directory", path=path)
        for candidate, name in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                found.append((candidate, str(name)))
    return found


def _walk(root: Path) -> list[Path]:
    def fail(error: OSError) -> None:
        raise InputError(f"cannot list directory: {error.strerror}", path=error.filename)

    files: list[Path] = []
    for directory, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(directory, f) for f in sorted(filenames) if not f.startswith("."))
    return files


def describe_source(path: Path, name: str | None = None) -> SourceFile:
    """Size and sha256 of the file's bytes on disk, read in chunks so memory stays flat.

    `name` is what documents record as their source (default: the file name)."""
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    try:
        with path.open("rb", buffering=0) as stream:
            while count := stream.readinto(buffer):
                digest.update(view[:count])
                size += count
    except OSError as error:
        raise InputError(f"cannot read file: {error.strerror or error}", path=path) from None
    file_format, compressed = format_of(path)
    return SourceFile(path, file_format, compressed, size, digest.hexdigest(), name or path.name)


def list_sources(paths: Sequence[str | Path]) -> list[SourceFile]:
    """The input files with their sha256 and size, for the caller's lineage records."""
    return [describe_source(path, name) for path, name in find_named_files(paths)]


def open_binary(source: SourceFile) -> BinaryIO:
    """The file's content bytes as a stream, decompressing gzip on the fly."""
    if source.compressed:
        return gzip.open(source.path, "rb")  # type: ignore[return-value]
    return source.path.open("rb")


class TooLarge(OSError):
    """Content over the reader's size bound; an OSError so readers reject it like any
    other unreadable file."""


def too_large(limit: int, what: str) -> TooLarge:
    size = f"{limit / (1 << 20):g} MiB" if limit >= 1 << 20 else f"{limit} bytes"
    return TooLarge(
        f"{what} is larger than {size} once decompressed (max_file_mb); split the file, "
        "or raise the limit if it is genuine"
    )


def read_content(source: SourceFile, limit: int) -> bytes:
    """The whole (decompressed) content, at most `limit` bytes: for formats that are one
    document per file anyway."""
    with open_binary(source) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise too_large(limit, "the file")
    return data


def bounded_lines(stream: BinaryIO, limit: int) -> Iterator[bytes]:
    """The stream's lines (with their endings), refusing one longer than `limit` bytes
    before reading the rest of it."""
    while line := stream.readline(limit + 1):
        if len(line) > limit and not line.endswith(b"\n"):
            raise too_large(limit, "a line")
        yield line


def decode_text(data: bytes, fallback_encoding: str | None) -> tuple[str, str, bool]:
    """(text, encoding, used_fallback) following the module's encoding policy."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError as error:
                raise UndecodableText(
                    f"starts with a {encoding} byte-order mark but is not valid {encoding} "
                    f"(byte {error.start})",
                    "re-save the file as UTF-8",
                ) from None
            return text, encoding.removesuffix("-sig"), False
    try:
        return data.decode("utf-8"), "utf-8", False
    except UnicodeDecodeError as error:
        offset = error.start
    hint = "convert the file to UTF-8, or set fallback_encoding to its encoding (e.g. cp1251)"
    if fallback_encoding is None:
        raise UndecodableText(f"not valid UTF-8 (byte {offset})", hint)
    try:
        text = data.decode(fallback_encoding)
    except UnicodeDecodeError:
        raise UndecodableText(
            f"neither UTF-8 (byte {offset}) nor {fallback_encoding}", hint
        ) from None
    if from_bytes(data, cp_isolation=[fallback_encoding]).best() is None:
        raise UndecodableText(
            f"not UTF-8 (byte {offset}), and decoding it as {fallback_encoding} gives garbled text",
            hint,
        )
    return text, fallback_encoding, True


def encoding_metadata(encoding: str, used_fallback: bool) -> dict[str, object]:
    metadata: dict[str, object] = {"encoding": encoding}
    if used_fallback:
        metadata["encoding_fallback"] = True
    return metadata


class LineDecoder:
    """The encoding policy applied line by line, for files read as a stream (jsonl, csv).

    Checking the whole file first would mean another full pass over it; deciding per line
    keeps one pass and copes with files that mix encodings (concatenated exports). A
    UTF-16/32 file (with a BOM) is decoded as one text stream instead.
    """

    def __init__(self, fallback_encoding: str | None) -> None:
        self.fallback_encoding = fallback_encoding
        self.first_line = True

    def decode(self, raw: bytes) -> tuple[str, str, bool]:
        """(line, encoding, used_fallback); raises `UndecodableText`."""
        if self.first_line:
            self.first_line = False
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            return raw.decode("utf-8"), "utf-8", False
        except UnicodeDecodeError:
            pass
        return decode_text(raw, self.fallback_encoding)


def stream_bom_encoding(stream: BinaryIO) -> str | None:
    """The UTF-16/32 encoding whose BOM starts a (peekable) stream, else None."""
    head = stream.peek(4)[:4] if hasattr(stream, "peek") else b""
    for bom, encoding in _BOMS:
        if head.startswith(bom) and encoding != "utf-8-sig":
            return encoding
    return None
