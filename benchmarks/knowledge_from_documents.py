"""Does the model learn facts from the organisation's documents? Continued pre-training on a
generated parts catalogue, then SFT on Q&A synthesized from part of it, evaluated on
questions about the other part, against the same SFT without continued pre-training.

    python benchmarks/knowledge_from_documents.py                      # runs the quickstart first
    python benchmarks/knowledge_from_documents.py --workspace forgeml-workspace

The corpus (catalogue.py) is 48 products with a material, a warranty and a factory town
each, drawn at random, so no base model can know them. `forgeml data synthesize` (rules,
offline) turns the documents into Q&A, extraction and cloze examples; SFT trains on
those of the first 32 products only (`seen`). The held-out questions ask for each fact
of the other 16 (`unseen` products: in the continued pre-training corpus, never in SFT),
in the form the synthesizer asks about the seen ones ("What is Material (from The
Kestrel valve)?"). An answer is right when it contains the fact. Chance is about 1/8
(each fact has 8 values).

Conditions, all from the quickstart's pre-trained `quickstart-base`:
- `SFT only`: SFT on the seen products' examples.
- `CPT + SFT`: continued pre-training on the whole catalogue, then the same SFT.
- `CPT + SFT, replay`: the same, with half of SFT's trained tokens replayed from the
  catalogue (`--replay catalogue-mix --replay-fraction 0.5`), so SFT does not wash out
  what CPT stored.
Besides the questions, `recall` probes the raw text: does the model continue "The
Kestrel valve is a marine part made of" with the unseen product's material (and the
sentence with its town)? It says whether a fact is in the weights at all, before asking
whether SFT taught the model to answer with it.
Everything runs through the CLI, as a user would; the numbers in docs/PERFORMANCE.md
come from this script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import catalogue

from forgeml.core.workspace import Workspace
from forgeml.data.dataset import iter_records
from forgeml.eval.local import LocalChatModel
from forgeml.eval.suite import ChatRequest

SEEN = 32
FACTS = {"Material": "material", "Warranty": "warranty", "Factory": "town"}


def forgeml(workspace: Path, *args: str) -> str:
    command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"forgeml {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def questions(products: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [
        (f"What is {label} (from The {product['name']})?", product[key])
        for product in products
        for label, key in FACTS.items()
    ]


def recall(model: LocalChatModel, products: list[dict[str, str]]) -> float:
    """Share of material and town facts the model continues the catalogue's sentence with."""
    import torch

    right = total = 0
    for product in products:
        stem = f"# The {product['name']}\n\nThe {product['name']} is a marine part made of"
        for prompt, fact in ((stem, product["material"]),
                             (f"{stem} {product['material']} in", product["town"])):  # fmt: skip
            ids = model.tokenizer(prompt, return_tensors="pt").input_ids
            with torch.no_grad():
                out = model.model.generate(ids, max_new_tokens=8, do_sample=False)
            text = model.tokenizer.decode(out[0, ids.shape[1] :])
            right += fact.lower() in text.lower()
            total += 1
    return right / total


def accuracy(model: LocalChatModel, asked: list[tuple[str, str]]) -> float:
    requests = [ChatRequest([{"role": "user", "content": q}]) for q, _ in asked]
    answers = model.complete(requests)
    right = sum(
        fact.lower() in answer.content.lower()
        for answer, (_, fact) in zip(answers, asked, strict=True)
    )
    return right / len(asked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="A workspace `forgeml quickstart` filled.")
    parser.add_argument("--cpt-steps", type=int, default=1500)
    parser.add_argument("--sft-steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-3, help="CPT and SFT peak rate.")
    args = parser.parse_args()
    root = args.workspace or Path(tempfile.mkdtemp(prefix="forgeml-kd-")) / "ws"
    if not (root / "quickstart-data").is_dir():
        forgeml(root, "quickstart")
    docs = root / "catalogue-docs"
    products = catalogue.write(docs)
    seen, unseen = products[:SEEN], products[SEEN:]
    timings = {}

    started = time.perf_counter()
    forgeml(root, "data", "ingest", str(docs), "--name", "catalogue")
    forgeml(root, "data", "synthesize", "catalogue", "--name", "catalogue-qa")
    workspace = Workspace.open(root)
    records = list(iter_records(workspace.root / workspace.registry.resolve("catalogue-qa").path))
    workspace.close()
    seen_files = {product["file"] for product in seen}
    sft_lines = [
        {"messages": record["messages"]}
        for record in records
        if Path(record["source"]).name in seen_files
    ]
    tasks = Counter(
        record["metadata"]["synthetic"]["task"]
        for record in records
        if Path(record["source"]).name in seen_files
    )
    sft_file = root / "catalogue-sft-seen.jsonl"
    sft_file.write_text("".join(json.dumps(line) + "\n" for line in sft_lines))
    forgeml(root, "data", "ingest", str(sft_file), "--name", "catalogue-sft-seen")
    timings["data"] = time.perf_counter() - started

    started = time.perf_counter()
    forgeml(root, "data", "mix", "catalogue=1", "--validation-fraction", "0",
            "--name", "catalogue-mix")  # fmt: skip
    forgeml(root, "train", "pretrain", "--mixture", "catalogue-mix", "--base", "quickstart-base",
            "--max-steps", str(args.cpt_steps), "--lr", str(args.lr), "--batch-size", "8",
            "--eval-every", str(args.cpt_steps), "--name", "catalogue-cpt")  # fmt: skip
    timings["cpt"] = time.perf_counter() - started
    sft = ["--data", "catalogue-sft-seen", "--max-steps", str(args.sft_steps), "--lr",
           str(args.lr), "--batch-size", "8", "--seq-len", "256"]  # fmt: skip
    replay = ["--replay", "catalogue-mix", "--replay-fraction", "0.5"]
    for base, name, extra in (("quickstart-base", "kd-sft-only", []),
                              ("catalogue-cpt", "kd-cpt-sft", []),
                              ("catalogue-cpt", "kd-cpt-sft-replay", replay)):  # fmt: skip
        started = time.perf_counter()
        forgeml(root, "train", "sft", "--model", base, "--name", name, *sft, *extra)
        timings[name] = time.perf_counter() - started

    workspace = Workspace.open(root)
    paths = {n: workspace.root / workspace.registry.resolve(n).path
             for n in ("catalogue-cpt", "kd-sft-only", "kd-cpt-sft", "kd-cpt-sft-replay")}  # fmt: skip
    workspace.close()
    asked = {"seen": questions(seen), "unseen": questions(unseen)}
    chance = max(Counter(fact for _, fact in asked["unseen"]).values()) / len(asked["unseen"])
    print(f"{len(products)} products ({SEEN} seen by SFT); {len(sft_lines)} SFT examples "
          f"({dict(tasks)}); CPT {args.cpt_steps} steps, SFT {args.sft_steps} steps, lr {args.lr}")  # fmt: skip
    print(f"{'model':<18} {'unseen recall':>13} {'seen Q&A':>9} {'unseen Q&A':>11}   (n "
          f"{2 * len(unseen)} / {len(asked['seen'])} / {len(asked['unseen'])}; most common "
          f"unseen value {chance:.2f})")  # fmt: skip
    conditions = (("CPT alone", "catalogue-cpt"), ("SFT only", "kd-sft-only"),
            ("CPT + SFT", "kd-cpt-sft"), ("CPT + SFT, replay", "kd-cpt-sft-replay"))  # fmt: skip
    for label, name in conditions:
        model = LocalChatModel.load(paths[name], max_new_tokens=16, batch_size=16)
        scores = {key: accuracy(model, rows) for key, rows in asked.items()}
        print(f"{label:<18} {recall(model, unseen):>13.2f} {scores['seen']:>9.2f} "
              f"{scores['unseen']:>11.2f}")  # fmt: skip
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
