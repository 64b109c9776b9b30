"""A classifier head against the quickstart's generative router, on the same tickets.

    python benchmarks/classifier_vs_router.py                     # runs the quickstart first (~4 min)
    python benchmarks/classifier_vs_router.py --workspace /tmp/qs # reuse a quickstart workspace

Both start from the quickstart's pre-trained `quickstart-base`. The generative router is
the quickstart's own `quickstart-router` (SFT, DPO and GRPO, answering JSON); the
classifier is `train classify` on the same SFT tickets, their JSON answers as labels
(category and priority). Each is measured on

- `templates`: the quickstart's held-out routing tickets (same templates as training,
  unseen ticket texts), and
- `unseen`: hand-written tickets in phrasings no generator template has
  (forgeml.quickstart.unseen, also the quickstart's `eval-routing-unseen` suite),
- `fresh`: 40 more hand-written tickets, written after the training-ticket generator
  (phrasing.py) was frozen, so nobody tuned the generator towards them,

for accuracy (both labels right) and wall time per ticket, one at a time and in
batches of 16, greedy, on this machine's CPU threads. The same process measures both,
one after the other.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from forgeml.core.workspace import Workspace
from forgeml.eval.local import LocalChatModel
from forgeml.eval.suite import ChatRequest
from forgeml.models.classifier import Classifier
from forgeml.models.classifier_config import decide
from forgeml.quickstart.unseen import FRESH_TICKETS, UNSEEN_TICKETS

UNSEEN = UNSEEN_TICKETS  # hand-written, in phrasings no quickstart template has
TRAIN = ["--max-steps", "300", "--batch-size", "16", "--lr", "1e-3", "--seq-len", "128"]


def forgeml(workspace: Path, *args: str) -> str:
    command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"forgeml {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def tickets(data: Path) -> tuple[list[tuple[str, str, str]], str, list[dict]]:
    """(held-out tickets, the router's system prompt, classifier training lines)."""
    held_out, system = [], ""
    for line in (data / "routing/eval-routing.jsonl").read_text().splitlines():
        record = json.loads(line)
        system = record["messages"][0]["content"]
        user = record["messages"][-1]["content"]
        held_out.append((user, record["reference"]["category"], record["reference"]["priority"]))
    training = []
    for line in (data / "routing/sft.jsonl").read_text().splitlines():
        messages = json.loads(line)["messages"]
        try:
            labels = json.loads(messages[-1]["content"])
        except ValueError:
            continue
        if isinstance(labels, dict) and set(labels) == {"category", "priority"}:
            user = next(m["content"] for m in messages if m["role"] == "user")
            training.append({"text": user, "labels": labels})
    return held_out, system, training


def router_answers(router: LocalChatModel, system: str, texts: list[str], batch: int):
    router.batch_size = batch
    requests = [
        ChatRequest([{"role": "system", "content": system}, {"role": "user", "content": t}])
        for t in texts
    ]
    answers = []
    for start in range(0, len(requests), batch):
        for completion in router.complete(requests[start : start + batch]):
            try:
                parsed = json.loads(completion.content)
            except ValueError:
                parsed = {}
            parsed = parsed if isinstance(parsed, dict) else {}
            answers.append((parsed.get("category"), parsed.get("priority")))
    return answers


def classifier_answers(classifier: Classifier, texts: list[str], batch: int):
    labels = [decide(s, classifier.layout) for s in classifier.scores(texts, batch_size=batch)]
    return [(found["category"], found["priority"]) for found in labels]


def measure(answer, texts: list[str], batch: int):
    started = time.perf_counter()
    answers = answer(texts, batch)
    return answers, (time.perf_counter() - started) / len(texts) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="A workspace `forgeml quickstart` filled.")
    args = parser.parse_args()
    root = args.workspace or Path(tempfile.mkdtemp(prefix="forgeml-cls-")) / "ws"
    if not (root / "quickstart-data").is_dir():
        forgeml(root, "quickstart")
    held_out, system, training = tickets(root / "quickstart-data")
    labelled = root / "classifier-train.jsonl"
    labelled.write_text("".join(json.dumps(line) + "\n" for line in training))
    forgeml(root, "data", "ingest", str(labelled), "--name", "routing-labels")
    forgeml(root, "train", "classify", "--model", "quickstart-base", "--data", "routing-labels",
            "--name", "routing-classifier", *TRAIN)  # fmt: skip
    workspace = Workspace.open(root)
    path = {n: workspace.root / workspace.registry.resolve(n).path
            for n in ("quickstart-router", "routing-classifier")}  # fmt: skip
    workspace.close()
    router = LocalChatModel.load(path["quickstart-router"], max_new_tokens=32)
    classifier = Classifier.load(path["routing-classifier"], max_tokens=128)
    systems = {
        "generative router": lambda texts, batch: router_answers(router, system, texts, batch),
        "classifier": lambda texts, batch: classifier_answers(classifier, texts, batch),
    }
    sets = {"templates": held_out, "unseen": UNSEEN, "fresh": FRESH_TICKETS}
    print(f"torch threads {torch.get_num_threads()}; {len(training)} training tickets")
    print(f"{'system':<18} {'set':<10} {'n':>4} {'both':>6} {'category':>9} "
          f"{'ms/ticket b1':>13} {'ms/ticket b16':>14}")  # fmt: skip
    for name, answer in systems.items():
        for set_name, rows in sets.items():
            texts = [row[0] for row in rows]
            answers, single = measure(answer, texts, 1)
            _, batched = measure(answer, texts, 16)
            both = sum(a == (c, p) for a, (_, c, p) in zip(answers, rows, strict=True))
            category = sum(a[0] == c for a, (_, c, _p) in zip(answers, rows, strict=True))
            print(f"{name:<18} {set_name:<10} {len(rows):>4} {both / len(rows):>6.2f} "
                  f"{category / len(rows):>9.2f} {single:>13.1f} {batched:>14.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
