"""Monitoring costs: drift signals per request, and reports over a large request log.

    .venv/bin/python benchmarks/monitor.py [--requests 100000]

- Signals: microseconds per request to compute the drift signals (monitor.signals) of a
  support-ticket prompt and of a 4,000-character one, against what the server already
  spends per request in the same run: rendering the chat template and tokenizing it.
- Prompt scoring: milliseconds of an engine prefill (32 ticket-sized prompts, 8 of ~500
  tokens) with the prompt log-probability computed (serve/engine/prompt_score.py) and
  without it, for the `mini` and `small` shapes: its cost, as a share of the prefill it
  rides on (decode steps are untouched, so its share of tokens/s is smaller still).
- Reports: a workspace with a tiny model fine-tuned on support conversations (so it has
  a drift reference) and `--requests` request-log rows with signals spread over 30 days;
  wall time and peak RSS of `monitor usage`, `monitor drift` (the whole window) and
  `monitor report` (30 buckets), each in its own process, against reading the same rows
  and nothing else (the baseline: what the database costs).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ASKS = ["My order {n} has not arrived yet, can you check?", "I was charged twice for {n}.",
        "How do I reset my password for account {n}?", "The laptop {n} arrived broken."]  # fmt: skip


def make_workspace(root: Path, requests: int) -> None:
    import pydoc_data.topics

    from forgeml.core.context import record_artifact
    from forgeml.core.runs import run_stage
    from forgeml.core.schema import RequestLog, utcnow
    from forgeml.core.workspace import Workspace
    from forgeml.models.sizes import build_config, build_model
    from forgeml.models.tokenizer import train_tokenizer

    workspace = Workspace.init(root)
    tokenizer = train_tokenizer(list(pydoc_data.topics.topics.values()), vocab_size=1000)
    model = build_model(build_config("tiny", vocab_size=len(tokenizer)), seed=0)
    temp = workspace.store.new_temp_dir()
    model.save_pretrained(temp)
    tokenizer.save_pretrained(temp)
    base = record_artifact(workspace, workspace.store.commit(temp, "model", None, {}), None)
    rng = random.Random(0)
    chats = root / "chats.jsonl"
    chats.write_text(
        "".join(
            json.dumps({"messages": [
                {"role": "user", "content": rng.choice(ASKS).format(n=rng.randrange(10**6))},
                {"role": "assistant", "content": "Routed."}]}) + "\n"
            for _ in range(500)
        )
    )  # fmt: skip
    dataset = run_stage(workspace, "data.ingest", {"paths": [str(chats)]}, quiet=True)
    sft = run_stage(
        workspace, "train.sft", {"max_steps": 1, "batch_size": 2, "name": "bench-bot"},
        {"model": base.ref, "dataset": dataset.outputs["dataset"].ref}, quiet=True,
    )  # fmt: skip
    artifact = sft.outputs["model"].ref
    now = utcnow()
    rows = []
    for index in range(requests):
        drifted = index > requests * 0.8  # the last fifth of the month is another domain
        rows.append({
            "completion_id": f"chatcmpl-{index}", "model": "bench-bot", "route": "chat.completions",
            "status": 200, "time": now - timedelta(days=30) * (1 - index / requests),
            "prompt_tokens": rng.randint(20, 60), "completion_tokens": 8,
            "latency_ms": rng.uniform(50, 400), "ttft_ms": rng.uniform(5, 50),
            "finish_reason": "stop", "response": {},
            "request": {"artifact": artifact, "stream": False, "signals": {
                "user_chars": rng.randint(600, 1600) if drifted else rng.randint(35, 60),
                "turns": 1, "chars_per_token": rng.uniform(2.0, 2.6) if drifted else rng.uniform(3.5, 4.2),
                "language": "de" if drifted else "en"}},
        })  # fmt: skip
    with workspace.registry.session() as session:
        for start in range(0, len(rows), 10_000):
            session.execute(RequestLog.__table__.insert(), rows[start : start + 10_000])
    workspace.close()


READ_ONLY = """
import sys
from sqlalchemy import select
from forgeml.core.schema import RequestLog
from forgeml.core.workspace import Workspace
workspace = Workspace.open(sys.argv[1])
with workspace.registry.session() as session:
    query = select(RequestLog.time, RequestLog.request).execution_options(yield_per=5000)
    print(sum(1 for _ in session.execute(query)))
"""


PEAK_OF = (  # runs a command and prints the peak RSS (KiB) of that command alone
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
    "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command in its own process."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_OF, *command], check=True, capture_output=True, text=True
    )
    return time.perf_counter() - started, int(done.stdout.split()[-1]) / 1024


def signal_costs() -> list[tuple[str, float, float]]:
    import pydoc_data.topics

    from forgeml.models.tokenizer import train_tokenizer
    from forgeml.monitor.signals import prompt_signals, token_counter

    tokenizer = train_tokenizer(list(pydoc_data.topics.topics.values()), vocab_size=1000)
    count = token_counter(tokenizer)
    prompt_signals("warm up: loads the language model once, as the server does at start", 1, count)
    long_text = pydoc_data.topics.topics["assert"] * 10
    results = []
    for label, text in [
        ("support ticket", ASKS[0].format(n=12345)),
        ("4,000 characters", long_text[:4000]),
    ]:
        messages = [
            {"role": "system", "content": "You route tickets."},
            {"role": "user", "content": text},
        ]
        rounds = 300
        started = time.perf_counter()
        for _ in range(rounds):
            tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        baseline = (time.perf_counter() - started) / rounds * 1e6
        started = time.perf_counter()
        for _ in range(rounds):
            prompt_signals(text, 2, count)
        signals = (time.perf_counter() - started) / rounds * 1e6
        results.append((label, signals, baseline))
    return results  # fmt: skip


def prompt_scoring_costs(repeats: int = 7) -> list[tuple[str, float, float]]:
    """(case, prefill ms with scoring, without) for two model shapes, median of repeats."""
    import statistics
    from unittest import mock

    import torch

    from forgeml.models.sizes import PAD_ID, build_config, build_model
    from forgeml.serve.engine import prompt_score
    from forgeml.serve.engine.base import GenerationRequest, SamplingParams
    from forgeml.serve.engine.batch import prefill
    from forgeml.serve.engine.sequence import Sequence

    rng = random.Random(0)
    sampling = SamplingParams(max_tokens=8, temperature=0.0)
    results = []
    nothing = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    for size in ("mini", "small"):
        model = build_model(build_config(size, vocab_size=8192), seed=0).eval()
        vocab = model.config.vocab_size
        for count, length in ((32, 60), (8, 500)):
            prompts = [[rng.randrange(10, vocab) for _ in range(length)] for _ in range(count)]

            def run(model=model, prompts=prompts) -> float:
                rows = [Sequence(GenerationRequest(str(i), p, sampling), None, set())
                        for i, p in enumerate(prompts)]  # fmt: skip
                started = time.perf_counter()
                with torch.inference_mode():
                    prefill(model, rows, PAD_ID)
                return (time.perf_counter() - started) * 1000

            def unscored(ids, mask):
                return (*nothing, [0] * len(ids))

            run()  # warm up
            timings: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(repeats):  # interleaved, so load on the machine hits both alike
                timings[True].append(run())
                with mock.patch.object(prompt_score, "prompt_targets", unscored):
                    timings[False].append(run())
            results.append((f"{size}, {count} x {length} tokens",
                            statistics.median(timings[True]), statistics.median(timings[False])))  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--only-scoring", action="store_true", help="Prompt scoring only.")
    args = parser.parse_args()

    print("prefill (ms)                  scored   unscored   extra")
    for label, scored, plain in prompt_scoring_costs():
        print(f"  {label:<26} {scored:8.1f}   {plain:8.1f}   {(scored / plain - 1) * 100:+5.1f}%")
    if args.only_scoring:
        return
    print("\nsignals per request (us)      signals   chat template + tokenize (baseline)")
    for label, signals, baseline in signal_costs():
        print(f"  {label:<26} {signals:9.0f}   {baseline:9.0f}   ({signals / baseline:.2f}x)")

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "ws"
        started = time.perf_counter()
        make_workspace(root, args.requests)
        print(
            f"\nworkspace with {args.requests:,} logged requests: {time.perf_counter() - started:.0f} s"
        )
        forgeml = [str(Path(sys.executable).parent / "forgeml"), "--workspace", str(root), "--json"]
        subprocess.run(
            [*forgeml, "monitor", "drift", "bench-bot", "--since", "1h"], capture_output=True
        )  # reference
        cases = [
            ("read the rows only (baseline)", [sys.executable, "-c", READ_ONLY, str(root)]),
            ("monitor usage --since 31d", [*forgeml, "monitor", "usage", "bench-bot", "--since", "31d"]),
            ("monitor drift --since 31d", [*forgeml, "monitor", "drift", "bench-bot", "--since", "31d"]),
            ("monitor report --since 31d", [*forgeml, "monitor", "report", "bench-bot", "--since", "31d",
                                            "--buckets", "30", "-o", str(Path(folder) / "r.html")]),
        ]  # fmt: skip
        print(f"{'command':<34} {'seconds':>8} {'peak MB':>8}")
        for label, command in cases:
            seconds, peak = timed(command)
            print(f"{label:<34} {seconds:8.1f} {peak:8.0f}")


if __name__ == "__main__":
    main()
