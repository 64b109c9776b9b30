"""The quickstart's shipped data: Python's own documentation plus a generated help desk.

Written deterministically (same seed, same bytes) into a folder the quickstart recipe
ingests, so a newcomer sees the whole lifecycle on realistic material with no download:

    python-docs/<topic>.md      ~79 documents from `pydoc_data.topics` (ships with Python)
    helpdesk/tickets.jsonl      support tickets labelled with category and priority, with
                                planted PII (emails, phones, Luhn-valid cards, IBANs) and
                                planted exact and near duplicates, as real exports have
    helpdesk/memos/*.html       internal memos wrapped in intranet boilerplate
    helpdesk/scan-corrupt.pdf   an unreadable file, to show how ingest reports one
    routing/                    the fine-tuning task: ticket routing (see routing.py)
"""

from __future__ import annotations

import json
import pydoc_data.topics
import random
from pathlib import Path

from forgeml.core.atomic import write_text_if_changed
from forgeml.quickstart.routing import write_routing_task
from forgeml.quickstart.vocabulary import CALM, CARDS, CATEGORIES, IBANS, NAMES, PRODUCTS, URGENT

MEMO_PAGE = """<!doctype html><html><head><title>{title}</title><script>trackPageView();</script></head>
<body><nav><a href="/">Intranet home</a> | <a href="/hr">HR</a> | <a href="/it">IT</a></nav>
<header><h1>{title}</h1></header>
<main><article>{body}</article></main>
<footer>© Example Corp · Internal use only · <a href="/privacy">Privacy</a></footer></body></html>
"""
MEMO_TOPICS = [
    (
        "Refund policy update",
        "Refunds for duplicate charges are now issued within five working days.",
    ),
    (
        "Shipping partners",
        "Parcels that have not moved for seven days are reported to the courier.",
    ),
    (
        "Returns process",
        "Customers print a return label from their order page; faulty items are replaced.",
    ),
    (
        "Account security",
        "Accounts lock after five failed log-ins and unlock after thirty minutes.",
    ),
    (
        "Firmware support",
        "Error codes starting with E4 mean a failed firmware update; advise a reset.",
    ),
]


def _ticket(rng: random.Random, index: int) -> dict:
    category = rng.choice(sorted(CATEGORIES))
    urgent = rng.random() < 0.35
    body = rng.choice(CATEGORIES[category]).format(
        product=rng.choice(PRODUCTS),
        order=f"ORD-{rng.randint(10000, 99999)}",
        code=rng.randint(100, 999),
    )
    name = rng.choice(NAMES)
    text = f"{body[0].upper()}{body[1:]}. {rng.choice(URGENT if urgent else CALM)} {name}"
    roll = rng.random()
    if roll < 0.15:
        text += f" ({name.split()[0].lower()}.{name.split()[1].lower()}@example.com)"
    elif roll < 0.25:
        text += f" Call me on +44 20 7946 {rng.randint(1000, 9999)}."
    elif roll < 0.30:
        text += f" My card is {rng.choice(CARDS)}."
    elif roll < 0.33:
        text += f" Please refund to IBAN {rng.choice(IBANS)}."
    return {
        "id": f"T{index:05d}",
        "text": text,
        "category": category,
        "priority": "high" if urgent else "normal",
    }


def tickets(count: int, seed: int = 0) -> list[dict]:
    """`count` tickets; about 3% exact and 3% near duplicates of earlier ones are planted."""
    rng = random.Random(seed)
    made: list[dict] = []
    for index in range(count):
        roll = rng.random()
        if made and roll < 0.03:
            made.append({**rng.choice(made), "id": f"T{index:05d}"})
        elif made and roll < 0.06:
            original = rng.choice(made)
            made.append(
                {**original, "id": f"T{index:05d}", "text": original["text"] + " Any update?"}
            )
        else:
            made.append(_ticket(rng, index))
    return made


def write_quickstart_corpus(directory: Path, seed: int = 0, ticket_count: int = 1200) -> dict:
    """Write the corpus (idempotent: unchanged files are left alone). Returns file counts."""
    docs = directory / "python-docs"
    docs.mkdir(parents=True, exist_ok=True)
    for topic, text in sorted(pydoc_data.topics.topics.items()):
        write_text_if_changed(docs / f"{topic}.md", f"# {topic}\n\n{text.strip()}\n")
    helpdesk = directory / "helpdesk"
    (helpdesk / "memos").mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tickets(ticket_count, seed))
    write_text_if_changed(helpdesk / "tickets.jsonl", lines)
    for number, (title, body) in enumerate(MEMO_TOPICS):
        page = MEMO_PAGE.format(
            title=title, body=f"<p>{body}</p><p>Questions: it-help@example.com</p>"
        )
        write_text_if_changed(helpdesk / "memos" / f"memo-{number:02d}.html", page)
    routing = write_routing_task(directory / "routing", seed=seed)
    corrupt = helpdesk / "scan-corrupt.pdf"
    if not corrupt.exists():
        corrupt.write_bytes(b"%PDF-1.4\n% a scanner crashed while writing this file\n")
    return {
        "python_docs": len(pydoc_data.topics.topics),
        "tickets": ticket_count,
        "memos": len(MEMO_TOPICS),
        **routing,
    }
