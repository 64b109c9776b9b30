"""Evaluations: every stored evaluation, and two or more side by side with the
per-example differences (the same `build_comparison` as `forgeml eval compare`)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from forgeml.console.render import ConsoleRoute, page
from forgeml.core.errors import ForgeError, InputError
from forgeml.eval.compare import build_comparison, diff_spans
from forgeml.eval.history import artifact_label, read_eval

router = APIRouter(route_class=ConsoleRoute)


@router.get("/ui/evals")
def evals(request: Request):
    artifacts = request.app.state.workspace.registry.list_artifacts("eval", limit=200)[::-1]
    return page(request, "evals.html", active="evals", evals=artifacts)


@router.get("/ui/evals/compare")
def compare(request: Request, ref: list[str] = Query(default=[])):
    refs = list(dict.fromkeys(r for r in ref if r.strip()))
    if len(refs) < 2:
        raise InputError(
            "pick at least two evaluations to compare", hint="Tick two or more on Evaluations."
        )
    workspace = request.app.state.workspace
    subjects, results = [], []
    for one in refs:
        artifact = workspace.registry.resolve(
            one, kind="eval", purpose="be compared in the console"
        )
        if artifact.meta.get("type") == "comparison":
            raise InputError(f"{one} is a comparison, not one model's evaluation")
        data = read_eval(workspace, artifact)
        subjects.append({"label": _label(workspace, data.get("subject") or {}), "eval": one})
        results.append(data)
    comparison = build_comparison(subjects, results, {}, [])
    for example in comparison["examples"]:
        base = (example["outputs"][0] or {}).get("output") or ""
        for output in example["outputs"][1:]:
            if output is not None:
                output["spans"] = diff_spans(base, output.get("output") or "")
    return page(request, "compare.html", active="evals", refs=refs, c=comparison)


def _label(workspace, subject: dict) -> str:
    if subject.get("type") == "model":
        try:
            return artifact_label(workspace, workspace.registry.resolve(subject["ref"]))
        except ForgeError:
            return subject["ref"]
    return f"{subject.get('model', '')} at {subject.get('url', '')}"


@router.get("/ui/evals/{kind}/{sha}/report.html")
def report(request: Request, kind: str, sha: str):
    """The evaluation's own HTML report, as `forgeml eval run` wrote it."""
    artifact = request.app.state.workspace.registry.resolve(
        f"{kind}/{sha}", kind="eval", purpose="be shown in the console"
    )
    root = request.app.state.workspace.local_path(artifact)
    for name in ("eval.html", "compare.html"):
        if (root / name).is_file():
            return FileResponse(root / name, media_type="text/html")
    raise InputError(f"{artifact.ref} has no HTML report")
