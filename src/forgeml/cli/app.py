"""The `forgeml` command line: `forgeml --help` lists the lifecycle's command groups."""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from pathlib import Path

import click
import typer
from rich.text import Text

from forgeml import __version__
from forgeml.cli import (
    admin,
    artifacts,
    data,
    deploy,
    finetune,
    governance,
    jobs,
    keys,
    models,
    models_sizes,
    monitor,
    quickstart,
    recipes,
    runs,
)
from forgeml.cli import batch as batch_cli
from forgeml.cli import classify as classify_cli
from forgeml.cli import eval as eval_cli
from forgeml.cli import export as export_cli
from forgeml.cli import launch as launch_cli
from forgeml.cli import plan as plan_cli
from forgeml.cli import serve as serve_cli
from forgeml.cli import tokenizer as tokenizer_cli
from forgeml.cli import train as train_cli
from forgeml.cli.output import Options, console, emit, errors
from forgeml.core.errors import ForgeError
from forgeml.core.workspace import WORKSPACE_ENV, Workspace

app = typer.Typer(
    name="forgeml",
    help="Make your organisation's own language model: data, training, evaluation, "
    "governance and serving, offline, on your machines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"forgeml {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    workspace: Path = typer.Option(
        Path("forgeml-workspace"),
        "--workspace",
        "-w",
        envvar=WORKSPACE_ENV,
        help="Workspace directory (artifacts, runs, registry).",
        show_default=True,
    ),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable JSON output."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    ctx.obj = Options(workspace=workspace, json=json_output, debug=debug)
    if debug:
        os.environ["FORGEML_DEBUG"] = "1"
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def init(ctx: typer.Context) -> None:
    """Create a workspace (directories, registry database) or upgrade an existing one."""
    opts: Options = ctx.obj
    workspace = Workspace.init(opts.workspace)
    data = {"workspace": str(workspace.root), "database": _safe_url(workspace.database_url)}
    emit(ctx, data, lambda: console.print(f"Workspace ready at {workspace.root}"))


def _safe_url(url: str) -> str:
    from forgeml.core.database import _redact

    return _redact(url)


app.add_typer(data.app, name="data")
app.add_typer(artifacts.app, name="artifacts")
app.add_typer(runs.app, name="runs")
app.add_typer(jobs.app, name="jobs")
app.add_typer(eval_cli.app, name="eval")
app.add_typer(tokenizer_cli.app, name="tokenizer")
train_cli.app.command("sft")(finetune.sft)
train_cli.app.command("preference")(finetune.preference)
train_cli.app.command("rl")(finetune.rl)
train_cli.app.command("classify")(finetune.classify)
app.add_typer(train_cli.app, name="train")
models.models_app.command("sizes")(models_sizes.sizes)
app.command(name="run")(recipes.run_recipe)
app.command(name="plan")(plan_cli.plan_recipe)
app.command(name="launch")(launch_cli.launch)
app.command(name="classify")(classify_cli.classify)
app.add_typer(recipes.stages_app, name="stages")
app.command(name="lineage")(governance.lineage)
app.command(name="audit")(governance.audit)
app.command(name="reproduce")(governance.reproduce)
app.command(name="quickstart")(quickstart.quickstart)
app.command(name="export")(export_cli.export)
app.command(name="serve")(serve_cli.serve)
app.command(name="ui")(serve_cli.ui)
app.add_typer(keys.app, name="keys")
app.add_typer(monitor.app, name="monitor")
app.add_typer(admin.app, name="admin")
app.add_typer(deploy.app, name="deploy")
app.add_typer(batch_cli.app, name="batch")
models.register(app)


def _on_sigterm(_signum, _frame) -> None:
    # Turn a polite kill into SystemExit so the running stage is recorded as interrupted.
    raise SystemExit(143)


def _click_classes(name: str) -> tuple[type[BaseException], ...]:
    """`name` from click and from the copy of click a typer release may vendor.

    typer 0.29 parses with its own `typer._click`, whose exceptions are not click's:
    catching only click's let every usage error through as a traceback.
    """
    found = {getattr(click.exceptions, name)}
    for source in (typer.BadParameter, typer.Exit, typer.Abort):
        found.update(cls for cls in source.__mro__ if cls.__name__ == name)
    return tuple(found)


_USAGE_ERRORS = _click_classes("ClickException")
_EXITS = _click_classes("Exit")
_ABORTS = _click_classes("Abort")


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="forgeml", standalone_mode=False)
    except ForgeError as exc:
        if os.environ.get("FORGEML_DEBUG"):
            traceback.print_exc()
        # Text, not markup: messages quote user data such as "[INST]" verbatim.
        errors.print(Text("error: ", style="bold red") + Text(exc.message))
        if exc.hint:
            errors.print(Text("hint: ", style="yellow") + Text(exc.hint))
        sys.exit(exc.exit_code)
    except _EXITS as exc:
        sys.exit(exc.exit_code)
    except _USAGE_ERRORS as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except _ABORTS:
        errors.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        errors.print("interrupted; rerun the same command to resume")
        sys.exit(130)
