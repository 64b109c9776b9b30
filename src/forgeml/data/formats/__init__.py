"""Training-data formats: what a jsonl line may look like, checked before training starts.

text        {"text": "..."}                                       pre-training
chat        {"messages": [...], "tools"?: [...]}                  SFT (OpenAI / Mistral
            or {"prompt": ..., "completion": ...}                 fine-tuning JSONL as-is)
preference  {"prompt"?, "chosen", "rejected"} (strings or messages), DPO / ORPO
            or OpenAI's {"input": {"messages", "tools"?}, "preferred_output",
            "non_preferred_output"}
prompt      {"prompt": ...} or {"messages": [...]} ending in a     RL (GRPO); other
            user turn, plus any fields ("answer", "reference")     fields go to rewards
classification  {"text" or "messages", "labels": {"set": "label"  classifiers (Mistral's
            or [labels]}}                                         classifier format)

validate_jsonl(path, expected_format="chat").raise_for_errors()
for record in iter_normalized(path, "chat"): ...      # canonical dicts, see normalize.py
"""

from __future__ import annotations

from forgeml.data.formats.checks import Problem
from forgeml.data.formats.normalize import (
    FORMATS,
    check_record,
    detect_format,
    normalize_record,
)
from forgeml.data.formats.schema import (
    ROLES,
    ChatRecord,
    FunctionCall,
    FunctionDefinition,
    Message,
    MessagesPromptRecord,
    OpenAIPreferenceRecord,
    PreferenceRecord,
    PromptCompletionRecord,
    PromptRecord,
    TextRecord,
    Tool,
    ToolCall,
)
from forgeml.data.formats.validate import (
    LineError,
    ValidationReport,
    ensure_valid_jsonl,
    iter_normalized,
    validate_jsonl,
)

__all__ = [
    "FORMATS",
    "ROLES",
    "ChatRecord",
    "FunctionCall",
    "FunctionDefinition",
    "LineError",
    "Message",
    "MessagesPromptRecord",
    "OpenAIPreferenceRecord",
    "PreferenceRecord",
    "Problem",
    "PromptCompletionRecord",
    "PromptRecord",
    "TextRecord",
    "Tool",
    "ToolCall",
    "ValidationReport",
    "check_record",
    "detect_format",
    "ensure_valid_jsonl",
    "iter_normalized",
    "normalize_record",
    "validate_jsonl",
]
