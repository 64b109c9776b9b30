"""Documents cut into passages: the unit an example is made from and traced back to.

A passage is a run of paragraphs under one heading, at most `max_chars` long, with its
character offsets in the document's text and the sha256 of its bytes, so every
synthetic example names exactly which bytes it came from (`text[start:end]`).

Headings are markdown (`# Title`) or underlined (`Title` over `*****`, `=====`, ...), the
two shapes documentation, wikis and exported help centres use.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

_MARKDOWN_HEADING = re.compile(r"^#{1,6}[ \t]+(?P<title>\S.{0,200}?)[ \t#]*$")
_UNDERLINE = re.compile(r"^([*=\-~^#+])\1{2,}[ \t]*$")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# Headings longer than this are prose that happens to start with '#'.
MAX_HEADING_CHARS = 120


@dataclass(frozen=True)
class Passage:
    """`document_text[start:end] == text`; `heading` is the nearest heading above it."""

    document_id: str
    title: str
    heading: str
    start: int
    end: int
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def lineage(self) -> dict[str, object]:
        return {
            "document_id": self.document_id,
            "start": self.start,
            "end": self.end,
            "sha256": self.sha256,
            "heading": self.heading,
        }


def _blocks(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each paragraph: text between blank lines, whitespace trimmed."""
    position = 0
    for match in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = match.start() if match else len(text)
        block = text[position:end]
        stripped = block.strip()
        if stripped:
            start = position + block.index(stripped)
            yield start, start + len(stripped)
        if match:
            position = match.end()


def _heading_of(block: str) -> str | None:
    """The heading a block is, or None. A heading block may carry a paragraph after it
    (the underline style often has no blank line before the text)."""
    lines = block.split("\n")
    first = lines[0].strip()
    if match := _MARKDOWN_HEADING.match(first):
        title = match.group("title").strip()
    elif len(lines) > 1 and _UNDERLINE.match(lines[1].strip()) and first:
        title = first
    else:
        return None
    return title if len(title) <= MAX_HEADING_CHARS else None


def _split_long(start: int, end: int, text: str, max_chars: int) -> Iterator[tuple[int, int]]:
    """A paragraph longer than max_chars, cut at the last sentence end or space before it."""
    while end - start > max_chars:
        window = text[start : start + max_chars]
        cut = max(window.rfind(". "), window.rfind("\n"))
        if cut < max_chars // 3:
            cut = window.rfind(" ")
        if cut < max_chars // 3:
            cut = max_chars - 1
        yield start, start + cut + 1
        start = start + cut + 1
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        yield start, end


def passages(
    document_id: str, text: str, max_chars: int = 1500, title: str = ""
) -> Iterator[Passage]:
    """The document's passages in order. The title is the given one, else the first
    heading, else the id; paragraphs join until the next would pass max_chars or a
    heading."""
    heading = ""
    current: list[tuple[int, int]] = []

    def flush() -> Iterator[Passage]:
        if current:
            start, end = current[0][0], current[-1][1]
            yield Passage(document_id, title or document_id, heading, start, end, text[start:end])
            current.clear()

    for start, end in _blocks(text):
        block = text[start:end]
        if (found := _heading_of(block)) is not None:
            yield from flush()
            heading = found
            title = title or found
            # Text under an underline in the same block belongs to the new section.
            lines = block.split("\n")
            skip = 1 if _MARKDOWN_HEADING.match(lines[0].strip()) else 2
            rest = "\n".join(lines[skip:])
            if not rest.strip():
                continue
            start = end - len(rest) + (len(rest) - len(rest.lstrip()))
        for piece in _split_long(start, end, text, max_chars):
            if current and piece[1] - current[0][0] > max_chars:
                yield from flush()
            current.append(piece)
    yield from flush()
