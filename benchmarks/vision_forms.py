"""Can a tiny vision-language model read forms it has not seen? Issue #20's shown-with-data
experiment, through the CLI as a user runs it.

    python benchmarks/vision_forms.py                       # ~6 minutes on 2 cores
    python benchmarks/vision_forms.py --train 800 --steps 600 --out results.json

The task (forgeml.quickstart.form_images): generated forms whose four fields (department:
header colour; items: rows drawn; status: stamp; priority: filled checkbox) are only in
the picture. Steps:

1. a `tiny` text model (built from config, tokenizer trained on Python's documentation;
   it has never seen a form) is registered as `base`;
2. `forgeml data ingest` the training forms (jsonl + image files), layouts `top`/`side`;
3. `forgeml models add-vision base --vision tiny`, then `forgeml train sft --trainable
   projector` (the projector alone), then `forgeml train sft` (everything);
4. the same SFT from `base` on the same chats with the image removed: the text-only
   baseline, which can only learn how often each value occurs;
5. `forgeml eval run` on two suites: new forms in the training layouts, and forms in
   the held-out `bottom` layout (json_match: all four fields right), plus per-field
   accuracy computed here from the same greedy answers.

Chance per field: department 0.25, items 0.25, status 0.33, priority 0.33.
"""

from __future__ import annotations

import argparse
import json
import pydoc_data.topics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forgeml.quickstart.form_images import (
    FIELDS,
    HELD_OUT_LAYOUTS,
    QUESTION,
    field_accuracy,
    form_records,
    write_dataset,
    write_suite,
)

CHANCE = {"department": 0.25, "items": 0.25, "status": 1 / 3, "priority": 1 / 3}


def forgeml(workspace: Path, *args: str) -> dict:
    command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace), "--json", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"forgeml {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def register_base(workspace: Path) -> None:
    """A tiny text model that has never seen a form, as `base`."""
    from forgeml.core.context import record_artifact
    from forgeml.core.workspace import Workspace
    from forgeml.models.sizes import build_config, build_model
    from forgeml.models.tokenizer import train_tokenizer

    if (workspace / "forgeml.yaml").exists() or (workspace / "registry.db").exists():
        return  # --keep: the same folder again (runs already done are reused)
    texts = [*pydoc_data.topics.topics.values(), QUESTION]
    tokenizer = train_tokenizer(texts, vocab_size=1000)
    model = build_model(build_config("tiny", vocab_size=len(tokenizer)), seed=0)
    opened = Workspace.init(workspace)
    temp = opened.store.new_temp_dir()
    model.save_pretrained(temp)
    tokenizer.save_pretrained(temp)
    artifact = record_artifact(opened, opened.store.commit(temp, "model", None), None)
    with opened.registry.session() as session:
        opened.registry.add_version(session, "base", artifact)
    opened.close()


def text_only(source: Path, target: Path) -> Path:
    """The same chats (or suite tasks) with the image part removed."""
    lines = []
    for line in source.read_text().splitlines():
        record = json.loads(line)
        user = record["messages"][0]
        user["content"] = next(p["text"] for p in user["content"] if p["type"] == "text")
        lines.append(json.dumps(record))
    target.write_text("\n".join(lines) + "\n")
    return target


def per_field(workspace: Path, model: str, suite: Path) -> dict[str, float]:
    """Greedy answers to a suite's forms, scored field by field."""
    from forgeml.core.workspace import Workspace
    from forgeml.eval.local import LocalChatModel
    from forgeml.eval.suite import ChatRequest, load_suite
    from forgeml.quickstart.form_images import Form

    opened = Workspace.open(workspace)
    directory = opened.root / opened.registry.resolve(model, kind="model").path
    opened.close()
    examples = load_suite(suite).examples
    chat = LocalChatModel.load(directory, max_new_tokens=48, batch_size=16)
    requests = [ChatRequest(example.messages) for example in examples]
    answers = [completion.content for completion in chat.complete(requests)]
    forms = [Form(**example.reference, layout="") for example in examples]
    return field_accuracy(answers, forms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=400, help="training forms")
    parser.add_argument("--test", type=int, default=64, help="forms per held-out suite")
    parser.add_argument("--projector-steps", type=int, default=100)
    # 1e-3 read the header on 2 of 3 seeds, 3e-3 on 1 of 3 (docs/PERFORMANCE.md)
    parser.add_argument("--projector-lr", default="1e-3", help="the projector-only step's lr")
    parser.add_argument("--steps", type=int, default=400, help="SFT steps, everything trained")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep", type=Path, help="use (and keep) this folder")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the tower and the vision model's SFT runs"
    )
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="vision-forms-"))
    ws, data = root / "ws", root / "data"
    started = time.monotonic()
    register_base(ws)
    source = write_dataset(data, form_records(args.train, seed=0))
    suites = {
        "held-out forms": write_suite(data, form_records(args.test, seed=1), "test"),
        "held-out layout": write_suite(
            data, form_records(args.test, seed=2, layouts=HELD_OUT_LAYOUTS), "test-layout"
        ),
    }
    forgeml(ws, "data", "ingest", str(source), "--name", "forms")
    forgeml(ws, "data", "ingest", str(text_only(source, data / "forms-text.jsonl")),
            "--name", "forms-no-images")  # fmt: skip
    sft = ["train", "sft", "--batch-size", "16", "--no-collapse-check"]
    timings = {}
    clock = time.monotonic()
    seed = ["--seed", str(args.seed)]
    forgeml(ws, "models", "add-vision", "base", "--vision", "tiny", "--name", "base-vl", *seed)
    forgeml(ws, *sft, "--model", "base-vl", "--data", "forms", "--trainable", "projector", *seed,
            "--max-steps", str(args.projector_steps), "--lr", args.projector_lr, "--name", "forms-proj")  # fmt: skip
    forgeml(ws, *sft, "--model", "forms-proj", "--data", "forms", "--max-steps", str(args.steps),
            "--lr", "2e-3", "--name", "forms-vl", *seed)  # fmt: skip
    timings["vision model"] = time.monotonic() - clock
    clock = time.monotonic()
    forgeml(ws, *sft, "--model", "base", "--data", "forms-no-images", "--max-steps", str(args.steps),
            "--lr", "2e-3", "--name", "text-baseline")  # fmt: skip
    timings["text-only"] = time.monotonic() - clock

    rows = {}
    text_suites = {
        name: text_only(path, path.with_name(path.stem + "-text.jsonl"))
        for name, path in suites.items()
    }
    for model, shown in (("forms-vl", suites), ("text-baseline", text_suites)):
        report = forgeml(ws, "eval", "run", model, "--reasoning", "none", "--max-new-tokens",
                         "48", "--batch-size", "16",
                         *[f"--suite={path}" for path in shown.values()])  # fmt: skip
        for name, path in shown.items():
            fields = per_field(ws, model, path)
            rows[(model, name)] = {**fields, "eval_json_match": report["metrics"].get(
                f"{path.stem}/json_match")}  # fmt: skip
    header = f"{'model':<12} {'suite':<16} " + " ".join(f"{f:>10}" for f in (*FIELDS, "all"))
    print(header)
    print(f"{'chance':<12} {'':<16} " + " ".join(
        f"{CHANCE[f]:>10.2f}" for f in FIELDS) + f" {1 / 144:>10.3f}")  # fmt: skip
    for (model, suite), fields in rows.items():
        print(
            f"{model:<12} {suite:<16} " + " ".join(f"{fields[f]:>10.2f}" for f in (*FIELDS, "all"))
        )
    print("forgeml eval json_match (all four fields):", {
        f"{m}/{s}": r["eval_json_match"] for (m, s), r in rows.items()})  # fmt: skip
    print("training seconds:", {k: round(v) for k, v in timings.items()},
          "total", round(time.monotonic() - started))  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()},
            "rows": [{"model": m, "suite": s, **r} for (m, s), r in rows.items()],
            "seconds": timings,
        }, indent=2))  # fmt: skip
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
