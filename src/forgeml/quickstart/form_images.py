"""A generated image task with known answers: small office forms, drawn with Pillow.

Each form has four fields a model must read from the picture, never from the text:

    department  the header band's colour   finance, legal, people, it
    items       line-item rows drawn        1 to 4
    status      the stamp                   paid (green disc), overdue (red square),
                                            draft (grey diamond)
    priority    which checkbox is filled    low, normal, high (in reading order)

The question is always the same sentence, so a text-only model can only guess (the
best it can do is the commonest value of each field). Layouts `top` and `side` are
for training; `bottom` (header at the foot, checkboxes in a column, stamp at the top
left) is held out, so evaluation also measures whether a model read the marks or learned
where they sit.

    records = form_records(count=200, seed=0, layouts=TRAIN_LAYOUTS)
    write_dataset(directory, records)     # forms.jsonl + images/, as `data ingest` reads

Deterministic: the same count, seed and layouts give the same PNG bytes.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEPARTMENTS = {
    "finance": (30, 90, 200),
    "legal": (130, 40, 160),
    "people": (235, 140, 20),
    "it": (20, 150, 120),
}
STATUSES = {"paid": (40, 170, 60), "overdue": (210, 30, 30), "draft": (130, 130, 130)}
PRIORITIES = ("low", "normal", "high")
TRAIN_LAYOUTS = ("top", "side")
HELD_OUT_LAYOUTS = ("bottom",)
QUESTION = "Read this form. Answer with its department, items, status and priority as JSON."
FIELDS = ("department", "items", "status", "priority")


@dataclass(frozen=True)
class Form:
    department: str
    items: int
    status: str
    priority: str
    layout: str

    def answer(self) -> str:
        return json.dumps({field: getattr(self, field) for field in FIELDS})


def random_form(rng: random.Random, layout: str) -> Form:
    return Form(
        department=rng.choice(list(DEPARTMENTS)),
        items=rng.randint(1, 4),
        status=rng.choice(list(STATUSES)),
        priority=rng.choice(PRIORITIES),
        layout=layout,
    )


def draw(form: Form, rng: random.Random) -> bytes:
    """The form as PNG bytes; sizes and offsets jitter within the layout (no two marks
    overlap)."""
    from PIL import Image, ImageDraw

    width, height = rng.randint(104, 128), rng.randint(120, 128)
    paper = tuple(rng.randint(238, 255) for _ in range(3))
    image = Image.new("RGB", (width, height), paper)
    pen = ImageDraw.Draw(image)
    band = rng.randint(14, 20)
    header_y = height - band if form.layout == "bottom" else 0
    pen.rectangle([0, header_y, width, header_y + band], fill=DEPARTMENTS[form.department])
    body_top = band + 6 if form.layout != "bottom" else 14
    left = rng.randint(6, 12)
    if form.layout == "side":  # the rows start right of a margin column
        left += rng.randint(14, 22)
    row_gap = rng.randint(13, 16)  # about one image token (16 pixels) per row
    for row in range(form.items):
        y = body_top + 20 + row * row_gap
        pen.rectangle([left, y, left + rng.randint(34, 52), y + 6], fill=(60, 60, 60))
    _checkboxes(pen, form, rng, width, height, body_top)
    _stamp(pen, form, rng, width, height, band)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=False)
    return buffer.getvalue()


def _checkboxes(
    pen: Any, form: Form, rng: random.Random, width: int, height: int, top: int
) -> None:
    side = 11
    chosen = PRIORITIES.index(form.priority)
    for index in range(3):
        if form.layout == "bottom":  # a column at the right, top to bottom
            x, y = width - side - rng.randint(4, 7), top + 4 + index * (side + 6)
        else:  # a row under the header, left to right
            x, y = 6 + index * (side + 7), top + 2
        fill = (20, 20, 20) if index == chosen else None
        pen.rectangle([x, y, x + side, y + side], outline=(20, 20, 20), fill=fill)


def _stamp(pen: Any, form: Form, rng: random.Random, width: int, height: int, band: int) -> None:
    size = rng.randint(16, 22)
    if form.layout == "bottom":  # top left, above the rows
        x, y = rng.randint(4, 10), rng.randint(2, 6)
    else:
        x, y = width - size - rng.randint(4, 10), height - size - rng.randint(4, 10)
    colour = STATUSES[form.status]
    box = [x, y, x + size, y + size]
    if form.status == "paid":
        pen.ellipse(box, fill=colour)
    elif form.status == "overdue":
        pen.rectangle(box, fill=colour)
    else:
        half = size // 2
        pen.polygon(
            [(x + half, y), (x + size, y + half), (x + half, y + size), (x, y + half)], fill=colour
        )


def form_records(
    count: int, seed: int, layouts: tuple[str, ...] = TRAIN_LAYOUTS
) -> list[tuple[Form, bytes]]:
    """`count` forms and their PNGs, the layouts taken in turn."""
    rng = random.Random(seed)
    forms = []
    for index in range(count):
        form = random_form(rng, layouts[index % len(layouts)])
        forms.append((form, draw(form, rng)))
    return forms


def write_dataset(directory: Path, forms: list[tuple[Form, bytes]], name: str = "forms") -> Path:
    """`name`.jsonl (one chat per form, its image a file under images/) and the PNGs.
    Returns the jsonl's path."""
    lines = [
        {
            "messages": [question, {"role": "assistant", "content": form.answer()}],
            "layout": form.layout,
        }
        for form, question in _questions(directory, forms, name)
    ]
    return _write_jsonl(directory / f"{name}.jsonl", lines)


def write_suite(directory: Path, forms: list[tuple[Form, bytes]], name: str) -> Path:
    """An evaluation suite (json_match against each form's fields) with its images."""
    lines = [
        {
            "id": f"{name}-{index}",
            "messages": [question],
            "metric": "json_match",
            "reference": json.loads(form.answer()),
        }
        for index, (form, question) in enumerate(_questions(directory, forms, name))
    ]
    return _write_jsonl(directory / f"{name}.jsonl", lines)


def _questions(
    directory: Path, forms: list[tuple[Form, bytes]], name: str
) -> list[tuple[Form, dict[str, Any]]]:
    """Each form's PNG written under images/, and the user turn asking about it."""
    (directory / "images").mkdir(parents=True, exist_ok=True)
    asked = []
    for index, (form, png) in enumerate(forms):
        file = f"images/{name}-{index:05d}.png"
        (directory / file).write_bytes(png)
        content = [
            {"type": "text", "text": QUESTION},
            {"type": "image_url", "image_url": {"url": file}},
        ]
        asked.append((form, {"role": "user", "content": content}))
    return asked


def _write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def field_accuracy(answers: list[str], forms: list[Form]) -> dict[str, float]:
    """Share of forms whose answer gets each field right, and all four at once."""
    right = dict.fromkeys((*FIELDS, "all"), 0)
    for answer, form in zip(answers, forms, strict=True):
        try:
            read = json.loads(answer)
        except ValueError:
            read = {}
        read = read if isinstance(read, dict) else {}
        hits = [read.get(field) == getattr(form, field) for field in FIELDS]
        for field, hit in zip(FIELDS, hits, strict=True):
            right[field] += hit
        right["all"] += all(hits)
    return {field: hits / max(1, len(forms)) for field, hits in right.items()}
