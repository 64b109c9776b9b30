"""The quickstart's "unseen phrasing" tickets share no four-word run with any ticket
the generator writes for training or evaluation: they measure the task, not recall."""

from __future__ import annotations

import json
import re

from forgeml.quickstart.routing import write_routing_task
from forgeml.quickstart.unseen import FRESH_TICKETS, UNSEEN_TICKETS


def four_grams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z']+", text.lower())
    return {tuple(words[i : i + 4]) for i in range(len(words) - 3)}


def test_unseen_tickets_share_no_phrase_with_generated_ones(tmp_path):
    write_routing_task(tmp_path)
    generated: set[tuple[str, ...]] = set()
    for name in ("sft.jsonl", "preferences.jsonl", "prompts.jsonl", "eval-routing.jsonl"):
        for line in (tmp_path / name).read_text().splitlines():
            generated |= four_grams(line)
    hand_written = [*UNSEEN_TICKETS, *FRESH_TICKETS]
    shared = {text: four_grams(text) & generated for text, _, _ in hand_written}
    assert not {text: runs for text, runs in shared.items() if runs}
    suite = [
        json.loads(x) for x in (tmp_path / "eval-routing-unseen.jsonl").read_text().splitlines()
    ]
    assert len(suite) == len(hand_written) == 80
    assert len({text for text, _, _ in hand_written}) == 80
    assert {s["reference"]["category"] for s in suite} == {
        "billing", "shipping", "returns", "account", "technical"
    }  # fmt: skip
