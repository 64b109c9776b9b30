"""Why the quickstart router misroutes hand-written tickets: words it never saw.

    python benchmarks/unseen_vocabulary.py --workspace /tmp/qs   # a finished quickstart workspace

The quickstart's model is pre-trained from scratch on the help-desk and Python text it
ships, then fine-tuned on generated tickets; it knows no word it was never shown. For each
hand-written ticket of the `eval-routing-unseen` suite (quickstart/unseen.py) this counts
its content words (three letters or more, stop words out) that appear in no training text
at all, and in none of the fine-tuning tickets; and whether the ticket has a *cue*: a
word that the fine-tuning tickets mostly use for the ticket's own category. Then it
splits the router's category accuracy (from the workspace's evaluation of
`quickstart-router`) by cue, and trains a naive Bayes classifier on the fine-tuning
tickets' words alone: what a learner that only knows those words can reach.

Only files the quickstart wrote and its own evaluation are read: nothing is trained but
the naive Bayes counts (a second).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

from forgeml.core.workspace import Workspace

# Function words: not what a ticket is about.
STOP_WORDS = """the and for was not you your our this that with are but can how why what which from
    has have had its it's into out any all one will would could should there their them
    they she her his him who get got still now just about been being does did don't
    can't i'd i'm won't isn't didn't more most some than then when where after before
    over under again here very also only too via per yet"""
STOP = frozenset(STOP_WORDS.split())


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z'-]+", text.lower()) if len(w) > 2 and w not in STOP]


def user_turns(path: Path):
    """(text, category) of each line's user turn; category from the assistant's JSON
    answer or tool call where the line has one."""
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        messages = record.get("messages") or record.get("input", {}).get("messages") or []
        text = " ".join(m.get("content") or "" for m in messages if m.get("role") == "user")
        yield text, _category(record)


def _category(record: dict) -> str | None:
    """The category a line's answer names: its `reference` (evaluation and GRPO lines),
    its preferred output (DPO) or its assistant turn (SFT: JSON or a tool call)."""
    reference = record.get("reference")
    if isinstance(reference, str):
        reference = json.loads(reference)
    if isinstance(reference, dict):
        return reference.get("category")
    for message in record.get("preferred_output", []) + record.get("messages", []):
        if message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or []:
            return json.loads(call["function"]["arguments"]).get("category")
        try:
            return json.loads(message.get("content") or "").get("category")
        except (ValueError, AttributeError):
            return None
    return None


def naive_bayes(examples: list[tuple[list[str], str]]):
    """Multinomial naive Bayes with add-one smoothing over the training words."""
    counts: dict[str, Counter] = defaultdict(Counter)
    priors = Counter(label for _, label in examples)
    for tokens, label in examples:
        counts[label].update(tokens)
    vocabulary = {w for c in counts.values() for w in c}
    totals = {label: sum(c.values()) for label, c in counts.items()}

    def predict(tokens: list[str]) -> str:
        def score(label: str) -> float:
            prior = math.log(priors[label] / len(examples))
            return prior + sum(
                math.log((counts[label][w] + 1) / (totals[label] + len(vocabulary)))
                for w in tokens
                if w in vocabulary
            )

        return max(priors, key=score)

    return predict


def router_answers(workspace: Workspace, model: str) -> dict[str, dict]:
    """The router's answers to the unseen suite, by ticket text, from its evaluation."""
    sha = workspace.registry.resolve(model).sha256
    for path in sorted((workspace.root / "artifacts" / "eval").glob("*/eval.json")):
        evaluation = json.loads(path.read_text())
        if evaluation["subject"].get("sha256") != sha:
            continue
        answers = {}
        for example in evaluation["examples"]:
            if example["suite"] == "eval-routing-unseen":
                try:
                    answer = json.loads(example["output"] or "")
                except ValueError:
                    answer = {}
                answers[example["messages"][-1]["content"]] = (
                    answer if isinstance(answer, dict) else {}
                )
        if answers:
            return answers
    raise SystemExit(f"no evaluation of {model} with the unseen suite in {workspace.root}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--model", default="quickstart-router")
    args = parser.parse_args()
    workspace = Workspace.open(args.workspace)
    data = args.workspace / "quickstart-data"
    pretraining = Counter()
    for path in [*(data / "helpdesk").rglob("*"), *(data / "python-docs").rglob("*")]:
        if path.is_file() and path.suffix in (".md", ".txt", ".jsonl"):
            pretraining.update(words(path.read_text(encoding="utf-8", errors="replace")))
    routing = data / "routing"
    tuning = [
        (words(text), category)
        for name in ("sft.jsonl", "preferences.jsonl", "prompts.jsonl")
        for text, category in user_turns(routing / name)
    ]
    tuned_words = Counter(w for tokens, _ in tuning for w in tokens)
    by_category: dict[str, Counter] = defaultdict(Counter)
    for tokens, category in tuning:
        if category:
            by_category[category].update(tokens)
    labelled = [(tokens, category) for tokens, category in tuning if category]
    predict = naive_bayes(labelled)
    answers = router_answers(workspace, args.model)

    rows = []
    for text, category in user_turns(routing / "eval-routing-unseen.jsonl"):
        tokens = words(text)
        cue = any(
            by_category[category][w] > 0.5 * sum(by_category[c][w] for c in by_category)
            for w in tokens
        )
        rows.append(
            {
                "words": len(tokens),
                "nowhere": sum(1 for w in tokens if not pretraining[w] and not tuned_words[w]),
                "not_tuned": sum(1 for w in tokens if not tuned_words[w]),
                "cue": cue,
                "router": answers.get(text, {}).get("category") == category,
                "bayes": predict(tokens) == category,
            }
        )
    total = sum(r["words"] for r in rows)
    print(f"{len(rows)} unseen tickets, {total} content words")
    print(f"  words in no training text:         {sum(r['nowhere'] for r in rows) / total:.0%}")
    print(f"  words in no fine-tuning ticket:    {sum(r['not_tuned'] for r in rows) / total:.0%}")
    print(f"{'tickets':28} {'count':>5} {'router category':>16} {'naive Bayes':>12}")
    for name, chosen in (
        ("all", rows),
        ("with a cue word", [r for r in rows if r["cue"]]),
        ("without one", [r for r in rows if not r["cue"]]),
    ):
        if chosen:
            router = sum(r["router"] for r in chosen) / len(chosen)
            bayes = sum(r["bayes"] for r in chosen) / len(chosen)
            print(f"{name:28} {len(chosen):5} {router:16.2f} {bayes:12.2f}")


if __name__ == "__main__":
    main()
