"""A generated parts catalogue: a second corpus (not the help desk) whose facts no model
can know, for the knowledge-from-documents experiment (knowledge_from_documents.py).

Each of PRODUCTS products (a unique bird name and a part type) gets a material, a
warranty and a factory town drawn from a seed, and one Markdown document that states
them three ways: a definition sentence, an option list ("Material - ...") and a prose
paragraph in one of several wordings. Stating a fact in several forms is what lets a
model trained on the documents answer questions about it later (knowledge
augmentation; Allen-Zhu and Li, "Physics of Language Models, part 3.1", 2023).
"""

from __future__ import annotations

import random
from pathlib import Path

BIRDS = [
    "Kestrel", "Plover", "Heron", "Merlin", "Osprey", "Curlew", "Dunlin", "Gannet",
    "Harrier", "Jackdaw", "Kittiwake", "Lapwing", "Linnet", "Magpie", "Nightjar", "Oriole",
    "Petrel", "Puffin", "Redstart", "Sandpiper", "Shrike", "Skylark", "Starling", "Swift",
    "Teal", "Tern", "Thrush", "Wagtail", "Warbler", "Waxwing", "Wigeon", "Wren",
    "Avocet", "Bittern", "Bunting", "Chiffchaff", "Crossbill", "Dipper", "Eider", "Fulmar",
    "Godwit", "Goldcrest", "Grebe", "Hobby", "Hoopoe", "Ibis", "Knot", "Nuthatch",
]  # fmt: skip
PARTS = ["valve", "pump", "winch", "coupling", "bracket", "sensor"]
MATERIALS = ["anodised titanium", "marine bronze", "duplex steel", "glass-filled nylon",
             "cast aluminium", "carbon composite", "nickel brass", "ceramic-coated iron"]  # fmt: skip
WARRANTIES = [f"{n} years" for n in range(2, 10)]
TOWNS = ["Tromsø", "Bergen", "Ålesund", "Bodø", "Stavanger", "Kristiansund", "Harstad", "Molde"]
PROSE = [
    "Every {name} leaves our {town} works with a warranty of {warranty}; its body is {material}.",
    "We build the {name} in {town} from {material}, and we stand behind it for {warranty}.",
    "Made in {town}, the {name} is cut from {material} and carries a {warranty} warranty.",
    "Customers order the {name} for its {material} body; {town} assembles it, and the "
    "warranty runs {warranty}.",
]
PRODUCTS = len(BIRDS)


def products(seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {
            "name": f"{bird} {rng.choice(PARTS)}",
            "material": rng.choice(MATERIALS),
            "warranty": rng.choice(WARRANTIES),
            "town": rng.choice(TOWNS),
            "prose": rng.choice(PROSE),
        }
        for bird in BIRDS
    ]


def document(product: dict[str, str]) -> str:
    name = product["name"]
    facts = {k: product[k] for k in ("material", "warranty", "town")}
    return (
        f"# The {name}\n\n"
        f"The {name} is a marine part made of {facts['material']} in {facts['town']}.\n\n"
        f"Material - {facts['material']}\n"
        f"Warranty - {facts['warranty']} from delivery\n"
        f"Factory - {facts['town']}\n\n" + product["prose"].format(name=name, **facts) + "\n"
    )


def write(folder: Path, seed: int = 0) -> list[dict[str, str]]:
    """One Markdown file per product; returns the products with their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    made = products(seed)
    for product in made:
        product["file"] = product["name"].lower().replace(" ", "-") + ".md"
        (folder / product["file"]).write_text(document(product), encoding="utf-8")
    return made
