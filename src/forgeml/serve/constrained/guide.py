"""The token guide: keeps a completion inside the shape the request asked for.

An assistant turn in our chat template is `[THINK]reasoning[/THINK]` (only when
reasoning is on), then an answer: text, or `[TOOL_CALLS]name[ARGS]{json}...`, then
`</s>`. The guide walks those phases and allows, at each step:

    opening        only [THINK]                        (reasoning on)
    thinking       text and [/THINK]; only [/THINK] once the reasoning budget is spent
    answer         text, </s>, and [TOOL_CALLS] if tools may be called (tool_choice auto)
    grammar        what the llguidance matcher allows: JSON for `response_format`, a
                   tool call for a forced `tool_choice`, or (switched on by the model
                   writing [TOOL_CALLS] under `auto`) a well-formed call of a given tool

Control tokens never appear where the template has no place for them, so a reasoning
"off" request gets no reasoning and a request without tools gets no tool call. Near
the end of the token budget a grammar phase prefers the tokens that close JSON
soonest (vocabulary.py), so constrained output finishes complete whenever the budget
allows it at all; a completion cut by `max_tokens` is reported with finish_reason
"length", as OpenAI does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forgeml.models import chat_template as ct
from forgeml.serve.constrained.vocabulary import GuideVocabulary

OPENING, THINKING, ANSWER, GRAMMAR = "opening", "thinking", "answer", "grammar"


@dataclass(frozen=True)
class OutputSpec:
    """What one completion may contain; built by the serving layer from the request."""

    reasoning: bool = False
    reasoning_budget: int | None = None  # tokens of reasoning before [/THINK] is forced
    grammar: str | None = None  # llguidance grammar for the whole answer
    tool_grammar: str | None = None  # grammar switched on when the model writes [TOOL_CALLS]
    field: str = "response_format"  # which request field a grammar came from (errors)

    @property
    def constrained(self) -> bool:
        return self.grammar is not None


# A grammar estimates how many tokens it needs to finish once this few are left.
ESTIMATE_FROM = 96
MAX_ESTIMATE = 128
CAREFUL_SLACK = 16
# Start closing with this much room to spare, plus as much again as the estimate: one
# free token (a "," in an open object) can add a key, a separator and a value to what
# is left to write, and the estimate follows one path where the sampler may take another.
CLOSING_SLACK = 8


class OutputGuide:
    """A `TokenGuide` (engine/base.py) for one sequence."""

    def __init__(self, vocabulary: GuideVocabulary, spec: OutputSpec, max_tokens: int) -> None:
        self.vocabulary = vocabulary
        self.spec = spec
        self.max_tokens = max_tokens  # an engine in another process rebuilds the guide
        self.reasoning_tokens = 0
        self.closing = False  # steering the grammar to its end (sticky)
        self._needed = 0  # estimated tokens to finish the grammar
        self._json = JsonState()
        self.matcher = None
        if spec.grammar is not None:  # compile now: a bad schema fails the request early
            self.matcher = vocabulary.matcher(spec.grammar, spec.field)
        if spec.tool_grammar is not None:
            vocabulary.matcher(spec.tool_grammar, "tools")
        self.phase = OPENING if spec.reasoning else GRAMMAR if self.matcher else ANSWER
        # Tokens a short complete output takes: how much room to keep for it.
        self._fresh = self._tokens_to_finish() if self.matcher is not None else 0
        self._next_estimate = max(ESTIMATE_FROM, 3 * self._fresh + CAREFUL_SLACK)
        self._think = vocabulary.id(ct.THINK) if spec.reasoning else -1
        self._end_think = vocabulary.id(ct.END_THINK) if spec.reasoning else -1
        self._thinking_mask = vocabulary.text.copy()
        if spec.reasoning:
            self._thinking_mask[self._end_think] = True
        self._answer_mask = vocabulary.text.copy()
        self._answer_mask[vocabulary.eos_id] = True
        self._tool_calls = vocabulary.control.get(ct.TOOL_CALLS, -1)
        if spec.tool_grammar is not None:
            self._answer_mask[self._tool_calls] = True

    def allowed(self, remaining_tokens: int) -> np.ndarray | None:
        if self.phase == OPENING:
            return self.vocabulary.only(self._think)
        if self.phase == THINKING:
            budget = self.spec.reasoning_budget
            over_budget = budget is not None and self.reasoning_tokens >= budget
            # A constrained answer needs room to be complete: stop thinking in time.
            out_of_room = self.spec.constrained and remaining_tokens <= self._fresh + CLOSING_SLACK
            if over_budget or out_of_room:
                return self.vocabulary.only(self._end_think)
            return self._thinking_mask
        if self.phase == ANSWER:
            return self._answer_mask
        mask = self.vocabulary.mask(self.matcher)
        if self.matcher.is_accepting() and remaining_tokens <= 2 * self._fresh + CLOSING_SLACK:
            # It could end here; going on (another tool call, say) might not fit.
            return self.vocabulary.only(self.vocabulary.eos_id)
        if not self.closing and remaining_tokens <= self._next_estimate:
            # Estimate again when half the slack is used up, and at every step once it
            # is small: one sampled token can open several levels of nesting.
            self._needed = self._tokens_to_finish()
            slack = remaining_tokens - self._needed
            self._next_estimate = remaining_tokens - max(1, (slack - CAREFUL_SLACK) // 2)
            self.closing = slack <= CLOSING_SLACK + self._needed
        if self.closing:
            mask = self._closing(mask, self._json)
        if not bool(mask.any()):
            return self.vocabulary.only(self.vocabulary.eos_id)
        return mask

    def _closing(self, mask: np.ndarray, state: JsonState) -> np.ndarray:
        """Of the allowed tokens, those that end the JSON soonest.

        Failing a closing token, the longest allowed ones: they finish a forced key or
        an enum value in the fewest steps, and keep the dry run's estimate honest.
        """
        tiers = self.vocabulary.string_tiers if state.in_string else self.vocabulary.outside_tiers
        for tier in tiers:
            preferred = mask & tier
            if bool(preferred.any()):
                return preferred
        lengths = np.where(mask, self.vocabulary.lengths, -1)
        return mask & (lengths == lengths.max())

    def _tokens_to_finish(self) -> int:
        """Tokens the grammar needs to reach its end, by a dry run of closing steps."""
        trial, state = self.matcher.deep_copy(), self._json.copy()
        for steps in range(MAX_ESTIMATE):
            if trial.is_stopped() or trial.is_error():
                return steps + 1  # </s> is still to come
            allowed = self._closing(self.vocabulary.mask(trial), state)
            token_id = (
                int(np.flatnonzero(allowed)[0]) if bool(allowed.any()) else self.vocabulary.eos_id
            )
            if token_id == self.vocabulary.eos_id:
                return steps + 1
            trial.consume_token(token_id)
            state.feed(self.vocabulary.texts[token_id])
        return MAX_ESTIMATE

    def advance(self, token_id: int) -> None:
        if self.phase == OPENING:
            self.phase = THINKING
        elif self.phase == THINKING:
            if token_id == self._end_think:
                self.phase = GRAMMAR if self.matcher is not None else ANSWER
            else:
                self.reasoning_tokens += 1
        elif self.phase == ANSWER:
            if token_id == self._tool_calls and self.spec.tool_grammar is not None:
                self.matcher = self.vocabulary.matcher(self.spec.tool_grammar, "tools")
                self.phase = GRAMMAR
                self._fresh = self._tokens_to_finish() + 1  # a whole call, [TOOL_CALLS] too
                self.matcher.consume_token(token_id)
        else:
            if self.matcher.is_accepting():  # going on past a possible end: estimate anew
                self._next_estimate = max(ESTIMATE_FROM, 3 * self._fresh + CAREFUL_SLACK)
            self.matcher.consume_token(token_id)
            self._json.feed(self.vocabulary.texts[token_id])


@dataclass
class JsonState:
    """Whether the JSON written so far ends inside a string (a two-flag lexer)."""

    in_string: bool = False
    escaped: bool = False

    def feed(self, text: str) -> None:
        for char in text:
            if self.escaped:
                self.escaped = False
            elif self.in_string and char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = not self.in_string

    def copy(self) -> JsonState:
        return JsonState(self.in_string, self.escaped)
