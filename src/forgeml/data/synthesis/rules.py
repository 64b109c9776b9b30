"""The offline generator: training examples read straight out of a passage, no model.

Each rule finds one shape that documents are full of and turns it into an example whose
answer is the document's own words (so it is grounded by construction):

    definition   "A refund is money returned ..."      qa       What is a refund?
    item         "--verbose - print every step"         qa       What is --verbose?
                 (two or more such lines)               extract  the items as JSON
    heading      a section and its first sentences      qa       What does T say about H?
                                                        summary  the lead of the passage
    cloze        a sentence with one rare word blanked  cloze    the word

These are the classic offline constructions (lead summaries, cloze, definition mining);
they teach a model what the documents say and how they name things. Questions a person
would ask in their own words need a teacher model (teacher.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from forgeml.data.synthesis.passages import Passage

TASKS = ("qa", "summary", "extract", "cloze")
BLANK = "____"


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_SENTENCE = re.compile(r"[^.!?]+(?:[.!?](?=\s|$)|$)")
# Words that make a sentence's subject something other than a term being defined.
_NOT_A_TERM = _word_set(
    "it this that there these those they he she we you i which what who here one each "
    "all some such both its their our when if while once since as because although "
    "after before until unless so then also note following else otherwise changed new "
    "deprecated version see"
)
_DEFINITION = re.compile(
    r"^(?P<article>(?:an?|the)\s+)?(?P<term>[\w][\w\s\-'’/().]{0,60}?)\s+"
    r"(?P<verb>is|are|means|refers to|is called)\s+(?P<rest>\S.{8,})$",
    re.IGNORECASE | re.DOTALL,
)
# "NAME - description", "NAME: description", "NAME — description", or an option table
# row "-v, --verbose    description" (two or more spaces between the columns).
_ITEM = re.compile(
    r"^\s*(?:[-*•]\s+)?(?P<name>[\w`'\"][\w.\-/+`'\"]{0,39}(?:,?\s[\w.\-/+`'\"]{1,25}){0,3}?)"
    r"(?:\s+[-–—]\s+|:\s+)(?P<description>\S.{7,300})$"
)
_OPTION = re.compile(
    r"^\s*(?P<name>-{1,2}[\w][\w\-]*(?:,\s*-{1,2}[\w][\w\-]*)*(?:[ =]<?[A-Z_]+>?)?)"
    r"\s{2,}(?P<description>\S.{7,300})$"
)
_NOT_A_DEFINITION = _word_set(
    "not also only still then now always never usually often set made done used given "
    "raised true false none possible likely able"
)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{4,}")
_COMMON = _word_set(
    "about above after again against because before being below between could doing "
    "during every further having other should their there these those through under "
    "until where which while would your yours itself might must shall using within "
    "without always often never also however therefore example following"
)


@dataclass(frozen=True)
class Candidate:
    """One generated example before filtering: the user's turn and the answer."""

    task: str
    rule: str
    question: str
    answer: str
    passage: Passage
    # Text the answer must be found in for the example to be grounded (None: answer).
    evidence: str | None = None


def prose(text: str) -> list[str]:
    """The passage's prose paragraphs: not code (indented), not list items, not grammar."""
    kept = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        lines = [line for line in paragraph.split("\n") if line.strip()]
        if not lines or lines[0][:1].isspace() or lines[0].lstrip()[:1] in "*-•|>#":
            continue
        if "::=" in paragraph or paragraph.count("`") > 6:
            continue
        kept.append(" ".join(paragraph.split()))
    return kept


def sentences(text: str) -> list[str]:
    """Sentences of the prose paragraphs, in order."""
    found = []
    for paragraph in prose(text):
        for match in _SENTENCE.finditer(paragraph):
            sentence = match.group().strip().lstrip(").,;: ")
            if sentence:
                found.append(sentence)
    return found


def _about(passage: Passage) -> str:
    return f" (from {passage.title})" if passage.title else ""


def definitions(passage: Passage) -> Iterator[Candidate]:
    for sentence in sentences(passage.text):
        match = _DEFINITION.match(sentence)
        if not match:
            continue
        term = match.group("term").strip()
        words = term.lower().split()
        if not 1 <= len(words) <= 4 or term[0].isdigit() or _NOT_A_TERM.intersection(words):
            continue
        first_of_rest = match.group("rest").split()[0].lower()
        if first_of_rest.endswith(("ed", "en")) or first_of_rest in _NOT_A_DEFINITION:
            continue  # passive voice or a state ("is determined", "is not"), not a definition
        verb = match.group("verb").lower()
        if verb == "means":
            question = f"What does {term} mean{_about(passage)}?"
        elif verb == "are":
            question = f"What are {term}{_about(passage)}?"
        else:
            article = (match.group("article") or "").strip().lower()  # mid-question
            named = f"{article} {term}" if article else term
            question = f"What is {named}{_about(passage)}?"
        yield Candidate("qa", "definition", question, sentence, passage)


def _item(line: str) -> dict[str, str] | None:
    match = _OPTION.match(line) or _ITEM.match(line)
    if not match:
        return None
    name = match.group("name").strip().strip("`'\"")
    named = set(name.lower().replace(",", " ").split())
    if name.endswith(".") or _NOT_A_TERM & named or not re.search(r"[A-Za-z]{2}", name):
        return None
    return {"name": name, "description": " ".join(match.group("description").split())}


def items(passage: Passage) -> Iterator[Candidate]:
    """Lines of a list: a bulleted "NAME - description" line, or two or more such lines
    in a row (one alone inside prose is usually a sentence with a colon in it)."""
    lines = [line for line in passage.text.split("\n") if line.strip()]
    parsed = [_item(line) for line in lines]
    found, names = [], set()
    for index, item in enumerate(parsed):
        bulleted = lines[index].lstrip()[:1] in "-*•"
        in_a_run = any(
            0 <= other < len(parsed) and parsed[other] for other in (index - 1, index + 1)
        )
        if item and (bulleted or in_a_run) and item["name"].lower() not in names:
            names.add(item["name"].lower())
            found.append(item)
    for item in found:
        question = f"What is {item['name']}{_about(passage)}?"
        yield Candidate("qa", "item", question, item["description"], passage)
    if len(found) >= 2:
        question = (
            "List every item this passage describes, as JSON: "
            '[{"name": ..., "description": ...}].\n\n' + passage.text
        )
        yield Candidate(
            "extract",
            "item",
            question,
            json.dumps(found, ensure_ascii=False),
            passage,
            evidence=passage.text,
        )


def lead(passage: Passage) -> Iterator[Candidate]:
    paragraphs = prose(passage.text)
    said = sentences(paragraphs[0]) if paragraphs else []
    if len(said) < 2 or len(sentences(passage.text)) < 3 or not passage.heading:
        return
    summary = " ".join(said[:2])
    if passage.heading != passage.title:
        question = f"What does {passage.title} say about {passage.heading}?"
        yield Candidate("qa", "heading", question, summary, passage)
    question = f"Summarise this passage in one or two sentences.\n\n{passage.text}"
    yield Candidate("summary", "heading", question, summary, passage)


def cloze(passage: Passage) -> Iterator[Candidate]:
    """Blank the rarest-looking word of each sentence of 8 to 40 words: the longest word
    not in a short common list (rare words carry the facts)."""
    for sentence in sentences(passage.text):
        if not 8 <= len(sentence.split()) <= 40:
            continue
        words = [m for m in _WORD.finditer(sentence) if m.group().lower() not in _COMMON]
        if not words:
            continue
        chosen = max(words, key=lambda match: (len(match.group()), -match.start()))
        masked = sentence[: chosen.start()] + BLANK + sentence[chosen.end() :]
        question = f"Fill in the blank{_about(passage)}: {masked}"
        yield Candidate("cloze", "cloze", question, chosen.group(), passage, evidence=sentence)


RULES: tuple[Callable[[Passage], Iterator[Candidate]], ...] = (definitions, items, lead, cloze)


def candidates(passage: Passage, tasks: set[str]) -> Iterator[Candidate]:
    for rule in RULES:
        for candidate in rule(passage):
            if candidate.task in tasks:
                yield candidate
