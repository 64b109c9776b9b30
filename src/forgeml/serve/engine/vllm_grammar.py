"""What a forgeml `OutputGuide` enforces, as one grammar for vLLM's structured outputs.

vLLM cannot ask our guide for a mask per token over HTTP, but its `guidance` backend
runs the same library (llguidance) on a grammar sent with the request
(`structured_outputs: {"grammar": ...}`: Lark syntax, `<[id]>` for a special token).
The guide's phases (constrained/guide.py) become one grammar for the whole completion:

    start:      reasoning? reply         reasoning when it is on, and then required
    reasoning:  <[THINK]> /(?s:.*)/ <[/THINK]>
    reply:      the JSON schema or forced tool-call grammar, when the request has one;
                else free text, then optionally [TOOL_CALLS] and the tool grammar
                (tool_choice auto)

Free text cannot contain control tokens (llguidance's regexes match text bytes only).
A plain-text answer without reasoning sends no grammar at all, so vLLM keeps its
unconstrained fast path; a model trained on our template does not write control
tokens there anyway.

What cannot be carried over: the reasoning budget (vLLM's `thinking_token_budget`
needs its Mistral reasoning parser, which needs a mistral-common tokenizer; such
requests are refused), and the guide's steering to close JSON before `max_tokens` runs
out (on vLLM a long constrained answer can end with finish_reason "length").
"""

from __future__ import annotations

import json
import re

from forgeml.core.errors import ForgeError, InputError
from forgeml.models import chat_template as ct
from forgeml.serve.constrained.guide import OutputGuide
from forgeml.serve.engine.base import TokenGuide

FREE_TEXT = "/(?s:.+)/"  # any text: llguidance regexes match valid UTF-8 only
_START_RULE = re.compile(r"^start:", re.MULTILINE)


def completion_grammar(guide: TokenGuide | None) -> str | None:
    """The Lark grammar vLLM should enforce for this guide; None: no constraint needed."""
    if guide is None:
        return None
    if not isinstance(guide, OutputGuide):
        raise ForgeError(f"the vLLM engine cannot apply a {type(guide).__name__} over HTTP")
    spec, vocabulary = guide.spec, guide.vocabulary
    if spec.reasoning and spec.reasoning_budget is not None:
        raise InputError(
            "the vLLM engine cannot enforce a reasoning budget (max_reasoning_tokens, or "
            "reasoning_effort low or medium, which cap reasoning tokens)",
            field="max_reasoning_tokens",
            hint="use reasoning_effort high and leave max_reasoning_tokens (and the server's "
            "default_reasoning_budget) unset, or serve with the transformers or llama.cpp engine",
        )
    if not (spec.reasoning or spec.grammar or spec.tool_grammar):
        return None
    lines = ["start: reasoning reply" if spec.reasoning else "start: reply"]
    if spec.reasoning:
        think, end_think = vocabulary.id(ct.THINK), vocabulary.id(ct.END_THINK)
        lines.append(f"reasoning: <[{think}]> {FREE_TEXT}? <[{end_think}]>")
    if spec.grammar is not None:
        lines.append("reply: answer_grammar")
        lines.append(_as_rule(spec.grammar, "answer_grammar"))
    elif spec.tool_grammar is not None:
        lines.append(f"reply: {FREE_TEXT} | {FREE_TEXT}? tool_grammar")
        lines.append(_as_rule(spec.tool_grammar, "tool_grammar"))
    else:
        lines.append(f"reply: {FREE_TEXT}?")
    return "\n".join(lines) + "\n"


def _as_rule(grammar: str, name: str) -> str:
    """One of our llguidance grammars as Lark rules whose entry point is `name`.

    JSON answers (json_schema.json_grammar) are llguidance's serialised form, a JSON
    object holding the schema; tool calls (tools.tool_call_grammar) are Lark already.
    """
    if not grammar.lstrip().startswith("{"):
        return _START_RULE.sub(f"{name}:", grammar).rstrip()
    parts = json.loads(grammar).get("grammars", [])
    if len(parts) != 1 or "json_schema" not in parts[0]:
        raise ForgeError("this output grammar cannot be passed to vLLM")
    return f"{name}: %json {json.dumps(parts[0]['json_schema'], ensure_ascii=True)}"
