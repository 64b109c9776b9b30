"""Model cards: what a model is, what made it and how it scores, written from the registry.

    forgeml models card my-model:4 -o MODEL_CARD.md

Everything measurable comes from records, not memory: lineage (datasets with their
sha256, the assessment reports made from them), the training runs' parameters and
`training.json`, evaluations and gates, seeds and package versions. What only the
owner knows (intended use, limitations, license) is left as marked placeholders, so a
card is never silently incomplete.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from forgeml.core.lineage import flatten, upstream
from forgeml.core.schema import Alias, Artifact, LineageEdge, Run, Version
from forgeml.eval.history import evals_of

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

TODO = "_To be written by the model's owner._"
SHOWN_FILES = 10
SHOWN_SCALARS = 14
TRAINED_KINDS = ("model", "adapter", "tokenizer")
PROMOTION_OUTCOMES = {
    "model.promote": "promoted",
    "model.promote.forced": "promoted by force",
    "model.promote.refused": "refused",
}


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        text = value if isinstance(value, str) else _short(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "" if value is None else str(value)


def _read_json(workspace: Workspace, artifact: Artifact, name: str) -> dict[str, Any] | None:
    path = workspace.local_path(artifact) / name
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def _artifact(session, node: dict[str, Any]) -> Artifact:
    return session.scalars(
        select(Artifact).where(Artifact.kind == node["kind"], Artifact.sha256 == node["sha256"])
    ).one()


def _reports_on(workspace: Workspace, dataset: Artifact) -> list[tuple[Artifact, Run]]:
    """`report` artifacts made by runs that read this dataset (its assessments)."""
    readers = select(LineageEdge.run_id).where(
        LineageEdge.artifact_id == dataset.id, LineageEdge.direction == "input"
    )
    with workspace.registry.session() as session:
        return [
            (artifact, run)
            for artifact, run in session.execute(
                select(Artifact, Run)
                .join(LineageEdge, LineageEdge.artifact_id == Artifact.id)
                .join(Run, Run.id == LineageEdge.run_id)
                .where(
                    LineageEdge.run_id.in_(readers),
                    LineageEdge.direction == "output",
                    Artifact.kind == "report",
                )
                .order_by(Artifact.id)
            )
        ]


def _report_summary(workspace: Workspace, report: Artifact) -> str:
    """A report's headline: its top-level numbers (or its `summary` block's) and any
    verdicts one level down (`data.assess` writes readiness verdicts there)."""
    folder = workspace.local_path(report)
    for path in sorted(folder.glob("*.json")):
        if path.name == "manifest.json":
            continue
        data = _read_json(workspace, report, path.name) or {}
        data = data.get("summary", data) if isinstance(data.get("summary"), dict) else data
        facts = [
            f"{key}: {_short(value)}"
            for key, value in data.items()
            if isinstance(value, (int, float, bool))
            or (isinstance(value, str) and key not in ("format", "forgeml_version"))
        ]
        facts += [
            f"{key}.{name}: {value['verdict']}"
            for key, group in data.items()
            if isinstance(group, dict)
            for name, value in group.items()
            if isinstance(value, dict) and "verdict" in value
        ]
        if facts:
            return "; ".join(facts[:SHOWN_SCALARS])
    return "(no summary numbers)"


def _data_section(workspace: Workspace, nodes: list[dict[str, Any]]) -> list[str]:
    datasets = [n for n in nodes if n["kind"] == "dataset"]
    lines = ["## Training data", ""]
    if not datasets:
        return [
            *lines,
            "No dataset in this model's recorded lineage (imported or trained outside forgeml).",
            "",
        ]
    rows = []
    with workspace.registry.session() as session:
        artifacts = {n["sha256"]: _artifact(session, n) for n in datasets}
    for node in datasets:
        meta = artifacts[node["sha256"]].meta or {}
        rows.append(
            [
                node["ref"],
                ", ".join(node["names"]),
                node["sha256"],
                meta.get("documents", ""),
                meta.get("characters", ""),
            ]
        )
    lines += [_table(["dataset", "names", "sha256", "documents", "characters"], rows), ""]
    for node in datasets:
        sources = node.get("sources") or []
        if sources:
            lines.append(f"Raw files of {node['ref']} ({len(sources)}):")
            lines += [f"- `{s['path']}` sha256 `{s['sha256']}`" for s in sources[:SHOWN_FILES]]
            if len(sources) > SHOWN_FILES:
                lines.append(
                    f"- … and {len(sources) - SHOWN_FILES} more (`forgeml lineage {node['ref']} --files 0`)"
                )
            lines.append("")
    reports = [
        (node, report, run)
        for node in datasets
        for report, run in _reports_on(workspace, artifacts[node["sha256"]])
    ]
    lines += ["### Data assessments", ""]
    if not reports:
        lines += ["No assessment report was made from these datasets (`forgeml data assess`).", ""]
    for node, report, run in reports:
        lines.append(
            f"- {node['ref']} → {report.ref} ({run.stage}): {_report_summary(workspace, report)}"
        )
    mixtures = [n for n in nodes if n["kind"] == "mixture"]
    for node in mixtures:
        with workspace.registry.session() as session:
            manifest = _read_json(workspace, _artifact(session, node), "mixture.json") or {}
        components = manifest.get("components", [])
        if components:
            lines += ["", f"Mixture {node['ref']} (sha256 `{node['sha256']}`):", ""]
            lines.append(
                _table(
                    ["dataset", "weight", "epochs", "target tokens"],
                    [
                        [c["dataset"], c["weight"], c["epochs"], c["target_tokens_est"]]
                        for c in components
                    ],
                )
            )
    return [*lines, ""]


def _training_section(
    workspace: Workspace, model: Artifact, runs: list[Run], nodes: list[dict[str, Any]]
) -> list[str]:
    lines = ["## Training", ""]
    record = _read_json(workspace, model, "training.json")
    if record:
        facts = {
            k: record.get(k)
            for k in ("stage", "steps", "tokens_seen", "epochs", "stopped_by", "seed")
        }
        facts.update({f"final {k}": v for k, v in (record.get("final") or {}).items()})
        facts.update({f"model {k}": v for k, v in (record.get("model") or {}).items()})
        lines += [
            _table(["training.json", "value"], [[k, v] for k, v in facts.items() if v is not None]),
            "",
        ]
    # Training = every run in the lineage that made a model, adapter or tokenizer,
    # whatever its stage is called (a base model's own training included).
    makers = {n["run"]["id"] for n in nodes if n.get("run") and n["kind"] in TRAINED_KINDS}
    training = [r for r in runs if r.id in makers]
    if not training:
        lines += ["No training run in the recorded lineage.", ""]
    for run in training:
        lines += [f"### {run.stage} (run `{run.id}`, seed {run.seed})", ""]
        if run.recipe:
            lines += [f"Recipe `{run.recipe}`, step `{run.step}`.", ""]
        params = {k: v for k, v in (run.params or {}).items() if v not in (None, [], {})}
        lines += [_table(["parameter", "value"], [[k, v] for k, v in sorted(params.items())]), ""]
    return lines


def _metrics_table(metrics: dict[str, float]) -> str:
    """One row per metric, one column per reasoning effort (`name@high` keys)."""
    efforts = sorted({k.partition("@")[2] for k in metrics if "@" in k})
    names = sorted({k.partition("@")[0] for k in metrics if "/" not in k})
    columns = ["none", *efforts] if efforts else ["value"]
    rows = [
        [name, metrics.get(name), *(metrics.get(f"{name}@{e}") for e in efforts)] for name in names
    ]
    return _table(["metric", *(f"reasoning {c}" if efforts else c for c in columns)], rows)


def _eval_section(workspace: Workspace, model: Artifact, name: str | None) -> list[str]:
    lines = ["## Evaluation", ""]
    records = evals_of(workspace, model)
    if not records:
        lines += [f"Not evaluated yet: `forgeml eval run {name or model.ref} --suite …`.", ""]
    for record in records[:3]:
        data = record.data
        suites = ", ".join(
            f"{s['name']} (sha256 `{s['sha256'][:16]}`)" for s in data.get("suites", [])
        )
        lines += [f"### {record.artifact.ref} (run `{record.run.id}`)", ""]
        if suites:
            lines += [
                f"Suites: {suites}; reasoning {', '.join(data['settings'].get('reasoning', []))}.",
                "",
            ]
        measured = data.get("perplexity")
        if measured:
            lines += [
                f"Held-out text: {measured['data']['ref']} ({measured['data']['split']}, sha256 "
                f"`{measured['data']['sha256'][:16]}`), {measured['tokens']:,} tokens.",
                "",
            ]
        lines += [_metrics_table(data.get("metrics", {})), ""]
    if name:
        lines += _gates_section(workspace, model, name)
    return lines


def _gates_section(workspace: Workspace, model: Artifact, name: str) -> list[str]:
    """The gates' verdicts as recorded when this version's promotion was attempted.

    Read from the audit log, not evaluated again: once a model holds the alias, gates
    such as `must_beat` would compare it with itself and could not fail.
    """
    label = f"{name}:{_version_of(workspace, model, name)}"
    attempts = [
        entry
        for entry in workspace.registry.audit_entries(
            1000, action="model.promote", target=f"{name}@"
        )
        if entry.target.startswith(f"{name}@") and (entry.details or {}).get("model") == label
    ]
    lines = ["### Gates (recorded at promotion)", ""]
    if not attempts:
        return [
            *lines,
            f"No promotion of {label} recorded: gates are checked, and their verdicts kept, "
            f"when it is promoted (`forgeml models promote {label} --alias prod`).",
            "",
        ]
    for entry in attempts:
        details = entry.details or {}
        outcome = PROMOTION_OUTCOMES.get(entry.action, entry.action)
        forced = f"; reason: {details.get('reason')}" if entry.action.endswith("forced") else ""
        evaluated = f", on {details['eval']}" if details.get("eval") else ""
        lines += [
            f"{entry.time:%Y-%m-%d %H:%M} UTC: {outcome} → {entry.target} by "
            f"{entry.actor}{evaluated}{forced}",
            "",
        ]
        gates = details.get("gates") or []
        if gates:
            rows = [[g["gate"], g["status"], g["message"], g.get("source", "")] for g in gates]
            lines += [_table(["gate", "result", "detail", "source"], rows), ""]
        else:
            lines += ["No gates were configured.", ""]
    return lines


def _version_of(workspace: Workspace, model: Artifact, name: str) -> int | None:
    with workspace.registry.session() as session:
        return session.scalar(
            select(Version.version)
            .where(Version.artifact_id == model.id, Version.name == name)
            .order_by(Version.version.desc())
        )


def _repro_section(runs: list[Run], model: Artifact) -> list[str]:
    lines = [
        "## Reproducibility",
        "",
        f"Model sha256 `{model.sha256}`. Re-make it and check every hash with `forgeml reproduce {model.ref}`.",
        "",
    ]
    rows = [
        [r.id, r.stage, r.seed, r.forgeml_version, (r.environment or {}).get("python", "")]
        for r in runs
    ]
    if rows:
        lines += [_table(["run", "stage", "seed", "forgeml", "python"], rows), ""]
    producing = next((r for r in reversed(runs) if r.environment), None)
    if producing is not None:
        packages = producing.environment.get("packages", {})
        lines += [
            f"Packages when `{producing.stage}` ran on {producing.environment.get('platform', '?')}:",
            "",
            _table(["package", "version"], sorted(packages.items())),
            "",
        ]
    return lines


def model_card(workspace: Workspace, ref: str) -> str:
    """The card's markdown for the model REF names."""
    model = workspace.registry.resolve(ref, kind="model")
    tree = upstream(workspace, model)
    nodes = flatten(tree, "inputs")
    run_ids = [n["run"]["id"] for n in nodes if n.get("run")]
    with workspace.registry.session() as session:
        runs = [session.get(Run, run_id) for run_id in dict.fromkeys(reversed(run_ids))]
        versions = list(
            session.scalars(
                select(Version).where(Version.artifact_id == model.id).order_by(Version.id)
            )
        )
        aliases = [
            f"{a.name}@{a.alias}"
            for a in session.scalars(
                select(Alias).where(Alias.version_id.in_([v.id for v in versions]))
            )
        ]
    names = [f"{v.name}:{v.version}" for v in versions]
    name = versions[-1].name if versions else None
    config = _read_json(workspace, model, "config.json") or {}
    lines = [
        f"# Model card: {names[-1] if names else model.ref}",
        "",
        _table(
            ["", ""],
            [
                ["artifact", model.ref],
                ["sha256", model.sha256],
                ["names", ", ".join(names) or "(unnamed)"],
                ["aliases", ", ".join(aliases) or "(none)"],
                ["created", f"{model.created_at:%Y-%m-%d %H:%M} UTC"],
                [
                    "architecture",
                    ", ".join(config.get("architectures", [])) or config.get("model_type", ""),
                ],
                ["size", f"{model.size_bytes:,} bytes"],
            ],
        ),
        "",
        "## Intended use",
        "",
        TODO + " Who should use this model, for which tasks, and for which not.",
        "",
        "## Limitations and risks",
        "",
        TODO
        + " Known failure modes, languages and domains not covered, biases found in evaluation.",
        "",
        "## License",
        "",
        TODO + " The model's license, and the licenses of the training data.",
        "",
    ]
    lines += _data_section(workspace, nodes)
    lines += _training_section(workspace, model, runs, nodes)
    lines += _eval_section(workspace, model, name)
    lines += _repro_section(runs, model)
    return "\n".join(lines).rstrip() + "\n"
