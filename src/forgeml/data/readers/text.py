"""Whole-file text formats: plain text, markdown and html, one document per file.

HTML main text comes from trafilatura: it finds the main content by text and link density
(dropping menus, link lists, cookie banners, comment sections), with readability/jusText
fallbacks built in, in ~10 ms for a 60 KB page (measured; lxml tag stripping alone takes
0.5 ms but keeps every menu and link list that is not in a nav tag). On short pages its
heuristics keep nav text, so page chrome (nav, aside, page-level header/footer, script,
style, forms) is pruned by tag before it runs. A page with no main text is rejected.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import Any

import yaml

from forgeml.data.readers.documents import (
    Document,
    ReadOptions,
    Rejection,
    SourceFile,
    document_id,
)
from forgeml.data.readers.sources import (
    READ_ERRORS,
    TooLarge,
    UndecodableText,
    decode_text,
    encoding_metadata,
    read_content,
)

_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.IGNORECASE)
# Page chrome, pruned before trafilatura sees the page. A <header>/<footer> inside an
# article or main is the article's own (its title, its byline) and is kept.
_BOILERPLATE_XPATH = " | ".join(
    [
        "//nav",
        "//aside",
        "//script",
        "//style",
        "//noscript",
        "//template",
        "//form",
        "//header[not(ancestor::article or ancestor::main)]",
        "//footer[not(ancestor::article or ancestor::main)]",
    ]
)


def load_text(source: SourceFile, options: ReadOptions) -> tuple[str, dict[str, Any]] | Rejection:
    """The file's decoded text with newlines normalised to \\n, or why it has none."""
    try:
        data = read_content(source, options.max_file_bytes)
    except TooLarge as error:
        return _reject(source, str(error))
    except READ_ERRORS as error:
        return _reject(source, f"cannot read file: {error}")
    fallback_encoding = options.fallback_encoding
    if source.format == "html":
        fallback_encoding = _declared_charset(data) or fallback_encoding
    try:
        text, encoding, used_fallback = decode_text(data, fallback_encoding)
    except UndecodableText as error:
        return _reject(source, error.reason, hint=error.hint)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    metadata: dict[str, Any] = {"format": source.format}
    metadata.update(encoding_metadata(encoding, used_fallback))
    return text, metadata


def read_txt(source: SourceFile, options: ReadOptions) -> Iterator[Document | Rejection]:
    loaded = load_text(source, options)
    if isinstance(loaded, Rejection):
        yield loaded
        return
    text, metadata = loaded
    yield _document(source, text, metadata)


def read_md(source: SourceFile, options: ReadOptions) -> Iterator[Document | Rejection]:
    """Markdown kept as markdown; YAML front matter is metadata, not prose, so it is cut."""
    loaded = load_text(source, options)
    if isinstance(loaded, Rejection):
        yield loaded
        return
    text, metadata = loaded
    front_matter, text = split_front_matter(text)
    title = front_matter.get("title")
    if not isinstance(title, str) or not title.strip():
        title = markdown_title(text)
    if title:
        metadata["title"] = title.strip()
    yield _document(source, text, metadata)


def read_html(source: SourceFile, options: ReadOptions) -> Iterator[Document | Rejection]:
    loaded = load_text(source, options)
    if isinstance(loaded, Rejection):
        yield loaded
        return
    html, metadata = loaded
    text, title = extract_html(html)
    if title:
        metadata["title"] = title
    yield _document(source, text, metadata)


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """({front matter}, body) for a `---` YAML block at the very start; else ({}, text)."""
    if not text.startswith("---\n"):
        return {}, text
    end = re.search(r"^(?:---|\.\.\.)[ \t]*$", text[4:], re.MULTILINE)
    if end is None:
        return {}, text
    try:
        front_matter = yaml.safe_load(text[4 : 4 + end.start()])
    except yaml.YAMLError:
        return {}, text  # a leading thematic break, not front matter
    if not isinstance(front_matter, dict):
        return {}, text
    return front_matter, text[4 + end.end() :].lstrip("\n")


def markdown_title(text: str) -> str | None:
    """The first ATX (`# Title`) or setext (`Title` over `=====`) heading outside code."""
    in_fence = False
    previous = ""
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
            previous = ""
            continue
        if in_fence:
            continue
        if heading := _ATX_HEADING.match(line):
            return heading.group(1)
        if previous.strip() and _SETEXT_UNDERLINE.match(line):
            return previous.strip()
        previous = line
    return None


def extract_html(html: str) -> tuple[str, str | None]:
    """(main text, title) of an html page; the text is "" when the page has none."""
    import trafilatura  # lazy: a slow import (~0.8 s)

    tree = trafilatura.load_html(html)
    if tree is None:  # trafilatura refuses bare fragments; give them a body
        tree = trafilatura.load_html(f"<html><body>{html}</body></html>")
    if tree is None:
        return "", None
    title = _html_title(tree)
    text = trafilatura.extract(
        tree,
        include_comments=False,
        include_tables=True,
        deduplicate=False,
        prune_xpath=_BOILERPLATE_XPATH,
    )
    return (text or "").strip(), title


def _html_title(tree: Any) -> str | None:
    for path in (".//title", ".//h1"):
        element = tree.find(path)
        if element is not None:
            title = " ".join(element.text_content().split())
            if title:
                return title
    return None


def _declared_charset(data: bytes) -> str | None:
    """The page's own `<meta charset>` as the fallback for non-UTF-8 bytes, if it names one.

    Following browsers (WHATWG), latin-1 and ascii declarations mean cp1252.
    """
    match = _META_CHARSET.search(data[:4096])
    if match is None:
        return None
    try:
        declared = codecs.lookup(match.group(1).decode("ascii")).name
    except LookupError:
        return None
    if declared in ("utf-8", "utf-16", "utf-32"):
        return None  # a wrong declaration; keep the configured fallback
    return "cp1252" if declared in ("iso8859-1", "ascii") else declared


def _document(source: SourceFile, text: str, metadata: dict[str, Any]) -> Document | Rejection:
    if not text.strip():
        return _reject(source, "no text: the file is empty or has no readable content")
    return Document(
        id=document_id(source.sha256, 0),
        text=text,
        source=source.name,
        source_sha256=source.sha256,
        metadata=metadata,
    )


def _reject(source: SourceFile, reason: str, hint: str | None = None) -> Rejection:
    return Rejection(str(source.path), reason, hint=hint, source_sha256=source.sha256)
