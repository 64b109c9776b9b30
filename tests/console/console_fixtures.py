"""A small workspace for the console tests: raw files -> dataset -> mixture -> two
evaluated `helpdesk` versions (and a third without an evaluation, which the gates
refuse), an assessment, a forgotten dataset, gates, and admin/viewer/inference keys.
Built from the evaluation tests' world (tests/eval/eval_fixtures.py) in a few seconds,
with a stage that 'trains' until cancelled, for the live Runs page."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))

from eval_fixtures import TOPICS, build_world, import_model, run_eval, save_model
from pydantic import Field

from forgeml.core.context import StageContext
from forgeml.core.errors import RunCancelled
from forgeml.core.forget import forget
from forgeml.core.runs import run_stage
from forgeml.core.stages import StageParams, stage
from forgeml.core.workspace import Workspace
from forgeml.serve.auth import create_key

GATES = {"min": {"exact_match": 0.0}}


class SlowParams(StageParams):
    seconds: float = Field(60.0, description="Stop on its own after this long.")
    tag: str = "live"


@stage("consoletest.slow", params=SlowParams, inputs={}, outputs={})
def slow(ctx: StageContext, params: SlowParams):
    """Emit a falling loss every 0.3 s until cancelled (or `seconds` pass)."""
    step, deadline = 0, time.monotonic() + params.seconds
    while time.monotonic() < deadline:
        step += 1
        ctx.metric(step, loss=round(5.0 / step, 4), learning_rate=0.001)
        ctx.raise_if_cancelled()
        time.sleep(0.3)
    return {}


@dataclass
class ConsoleWorld:
    workspace: Workspace
    admin_key: str
    viewer_key: str
    inference_key: str
    raw_dir: Path
    forgotten_dataset: str
    threads: list[threading.Thread] = field(default_factory=list)


def build_console_world(root: Path) -> ConsoleWorld:
    from forgeml.models.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(TOPICS, vocab_size=1000)
    dirs = {seed: save_model(root / f"seed{seed}", tokenizer, seed) for seed in (0, 1)}
    world = build_world(root / "world", dirs)
    workspace = world.workspace
    run_eval(world, 1)
    run_eval(world, 2)
    import_model(workspace, dirs[0], "helpdesk", extra="never evaluated")  # helpdesk:3
    settings = yaml.safe_load(workspace.config_path.read_text()) or {}
    workspace.config_path.write_text(yaml.safe_dump({**settings, "gates": GATES}))
    workspace.__dict__.pop("settings", None)  # a cached_property: read the gates afresh
    private = root / "private"
    private.mkdir()
    (private / "customer.txt").write_text("A customer asked us to delete this record.\n" * 20)
    gone = run_stage(workspace, "data.ingest", {"paths": [str(private)]}).outputs["dataset"]
    forget(workspace, gone, "deletion request 42")
    _, admin = create_key(workspace, "ops", "admin")
    _, viewer = create_key(workspace, "auditor", "viewer")
    _, inference = create_key(workspace, "app", "inference")
    return ConsoleWorld(workspace, admin, viewer, inference, root / "world" / "corpus", gone.ref)


def start_slow_run(workspace: Workspace, seconds: float = 60.0, tag: str = "live") -> str:
    """Start `consoletest.slow` in a thread; returns its run id once it is running."""
    from sqlalchemy import select

    from forgeml.core.schema import Run

    def target():
        try:
            run_stage(workspace, "consoletest.slow", {"seconds": seconds, "tag": tag}, quiet=True)
        except RunCancelled:
            pass

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with workspace.registry.reading() as session:
            run = session.scalars(
                select(Run).where(Run.stage == "consoletest.slow", Run.status == "running")
            ).first()
        if run is not None:
            return run.id
        time.sleep(0.1)
    raise AssertionError("the slow run did not start")
