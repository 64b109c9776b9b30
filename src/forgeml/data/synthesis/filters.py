"""What a generated example must pass to be kept: grounded, new, sized, free of PII.

Grounding is lexical: the share of the answer's content words (three letters or more,
not stop words) that occur in the passage. Rule-based answers are the passage's own
words and pass; a teacher's answer that brings facts from elsewhere does not. An
extraction answer (JSON items) is grounded when every item's name is in the passage.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

from forgeml.data.dedup import exact_key
from forgeml.data.pii import find_pii
from forgeml.data.synthesis.rules import Candidate

_CONTENT_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
_STOP = frozenset(
    str.split(
        "the and for are but not you all any can her was one our out has had his how its "
        "may new now who did get him let say she too use that with have this will your from "
        "they been were what when which their there would about into than then them these "
        "some could other more also only such each does"
    )
)


def content_words(text: str) -> set[str]:
    return {word for word in _CONTENT_WORD.findall(text.casefold()) if word not in _STOP}


def grounding(answer: str, evidence: str) -> float:
    """Share of the answer's content words found in the evidence (1.0 with none)."""
    words = content_words(answer)
    if not words:
        return 1.0
    return len(words & content_words(evidence)) / len(words)


def _extraction_grounded(answer: str, evidence: str) -> bool:
    try:
        found = json.loads(answer)
    except json.JSONDecodeError:
        return False
    if not isinstance(found, list) or not found:
        return False
    folded = evidence.casefold()
    return all(
        isinstance(item, dict) and str(item.get("name", "")).casefold() in folded for item in found
    )


@dataclass
class ExampleFilter:
    """Keeps or drops candidates in order; counts why each dropped one went."""

    min_grounding: float = 0.7
    min_answer_chars: int = 1
    max_answer_chars: int = 2000
    max_question_chars: int = 8000
    drop_pii: bool = True
    dropped: Counter = field(default_factory=Counter)
    _seen: set[str] = field(default_factory=set)

    def reason_to_drop(self, candidate: Candidate) -> str | None:
        answer = candidate.answer.strip()
        if not self.min_answer_chars <= len(answer) <= self.max_answer_chars:
            return "answer_length"
        if len(candidate.question) > self.max_question_chars:
            return "question_length"
        evidence = candidate.evidence or candidate.passage.text
        # The evidence too: a cloze blank can cut an address in two, hiding it from a scan.
        if self.drop_pii and any(map(find_pii, (candidate.question, answer, evidence))):
            return "pii"
        if candidate.task == "extract":
            if not _extraction_grounded(answer, evidence):
                return "not_grounded"
        elif grounding(answer, evidence) < self.min_grounding:
            return "not_grounded"
        key = exact_key(f"{candidate.task}\n{candidate.question}")
        if key in self._seen:
            return "duplicate"
        self._seen.add(key)
        return None

    def keep(self, candidate: Candidate) -> bool:
        reason = self.reason_to_drop(candidate)
        if reason:
            self.dropped[reason] += 1
        return reason is None
