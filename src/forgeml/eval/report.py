"""eval.html and compare.html: one self-contained page each, readable offline.

No scripts, stylesheets, fonts or images from anywhere: inline CSS, and bar charts as
inline SVG drawn here (a chart library would be a network fetch or a heavy dependency
for a few rectangles). Every piece of model output or user data is HTML-escaped.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from forgeml.eval.compare import diff_spans

COLOURS = ["#3b6fb6", "#e08a2c", "#4c9a55", "#b4474a", "#7d5ba6", "#8c6d46"]
UNBOUNDED = {"loss", "perplexity", "bits_per_byte"}
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;
font-variant-numeric:tabular-nums}pre{white-space:pre-wrap;margin:0;font:12px/1.4 monospace}
.best{font-weight:bold}.meta{color:#666}ins{background:#d4f4d4;text-decoration:none}
del{background:#f8d4d4}.ok{color:#2a7a2a}.bad{color:#a33}.swatch{display:inline-block;
width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
.example{border:1px solid #ddd;margin:1em 0;padding:.5em 1em}
"""


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return escape(str(value))


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )


def bar_chart(rows: list[tuple[str, list[float | None]]], series: list[str]) -> str:
    """Horizontal grouped bars on a 0–1 scale: one group per row, one bar per series."""
    if not rows:
        return ""
    bar, gap, label_width, plot_width = 14, 10, 190, 420
    group = bar * len(series) + gap
    height = group * len(rows) + 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + plot_width + 70}" '
        f'height="{height}" role="img" font-size="12" font-family="sans-serif">'
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        x = label_width + tick * plot_width
        parts.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 18}" stroke="#ddd"/>'
            f'<text x="{x:.1f}" y="{height - 4}" text-anchor="middle" fill="#666">{tick:g}</text>'
        )
    for index, (label, values) in enumerate(rows):
        top = index * group
        parts.append(
            f'<text x="{label_width - 6}" y="{top + group / 2 + 2:.1f}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
        for position, value in enumerate(values):
            y = top + position * bar
            width = max(0.0, min(1.0, value or 0.0)) * plot_width
            colour = COLOURS[position % len(COLOURS)]
            parts.append(
                f'<rect x="{label_width}" y="{y}" width="{width:.1f}" height="{bar - 2}" '
                f'fill="{colour}"><title>{escape(series[position])}: {_num(value)}</title></rect>'
                f'<text x="{label_width + width + 4:.1f}" y="{y + bar - 4}" fill="#444">'
                f"{_num(value)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _legend(series: list[str]) -> str:
    return " ".join(
        f'<span><span class=swatch style="background:{COLOURS[i % len(COLOURS)]}"></span>'
        f"{escape(name)}</span>"
        for i, name in enumerate(series)
    )


def _chartable(table: dict[str, list[float | None]]) -> list[tuple[str, list[float | None]]]:
    return [
        (name, values)
        for name, values in table.items()
        if name not in UNBOUNDED
        and all(v is None or 0 <= v <= 1 for v in values)
        and "/" not in name
    ]


def _prompt(messages: list[dict[str, Any]]) -> str:
    text = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, str):
            content = json.dumps(content, ensure_ascii=False)
        text.append(f"{message.get('role')}: {content}")
    return "\n".join(text)


def _json_or_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _answer_html(output: dict[str, Any]) -> str:
    html = f"<pre>{escape(output['output'])}</pre>"
    for call in output.get("tool_calls") or []:
        html += f"<pre>→ {escape(call['name'])}({escape(call['arguments'])})</pre>"
    if output.get("judge_reason"):
        html += f"<p class=meta>judge: {escape(output['judge_reason'])}</p>"
    if output.get("reasoning"):
        html += f"<details><summary>reasoning</summary><pre>{escape(output['reasoning'])}</pre></details>"
    return html


def _perplexity_table(rows: list[tuple[str, dict[str, Any] | None]]) -> str:
    measured = [(name, p) for name, p in rows if p]
    if not measured:
        return ""
    first = measured[0][1]
    html = (
        f"<h2>Held-out perplexity</h2><p class=meta>{escape(first['data']['ref'])} "
        f"({escape(first['data']['split'])}), context {first['context']}, stride {first['stride']}</p>"
        "<table><tr><th></th><th>loss (nats/token)</th><th>perplexity</th><th>bits per byte</th>"
        "<th>tokens</th><th>bytes</th></tr>"
    )
    for name, p in measured:
        html += (
            f"<tr><td>{escape(name)}</td><td class=num>{_num(p['loss'])}</td>"
            f"<td class=num>{_num(p['perplexity'])}</td><td class=num>{_num(p['bits_per_byte'])}</td>"
            f"<td class=num>{p['tokens']:,}</td><td class=num>{p['bytes']:,}</td></tr>"
        )
    return html + "</table>"


def eval_html(data: dict[str, Any]) -> str:
    """The page for one evaluation (eval.json)."""
    subject = data["subject"]
    title = f"Evaluation of {subject.get('ref') or subject.get('model')}"
    body = f"<p class=meta>{escape(json.dumps(data['settings'], ensure_ascii=False))}</p>"
    if data.get("notes"):
        body += "".join(f"<p class=bad>{escape(note)}</p>" for note in data["notes"])
    body += _perplexity_table(
        [(subject.get("ref") or subject.get("model", ""), data.get("perplexity"))]
    )
    for suite in data["suites"]:
        efforts = list(suite["results"])
        names = sorted({n for r in suite["results"].values() for n in r["metrics"]})
        table = {n: [suite["results"][e]["metrics"].get(n) for e in efforts] for n in names}
        body += (
            f"<h2>Suite {escape(suite['name'])}</h2><p class=meta>{suite['examples']} tasks, "
            f"sha256 {suite['sha256'][:16]}, reasoning: {_legend(efforts)}</p>"
            + bar_chart(_chartable(table), efforts)
            + "<table><tr><th>metric</th>"
            + "".join(f"<th>{escape(e)}</th>" for e in efforts)
            + "</tr>"
            + "".join(
                f"<tr><td>{escape(n)}</td>"
                + "".join(f"<td class=num>{_num(v)}</td>" for v in vs)
                + "</tr>"
                for n, vs in table.items()
            )
            + "</table>"
        )
        for effort, result in suite["results"].items():
            report = result.get("classification")
            if report:
                body += f"<p>Per label (reasoning {escape(effort)})</p><table><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
                for label, row in report["per_label"].items():
                    body += (
                        f"<tr><td>{escape(label)}</td><td class=num>{_num(row['precision'])}</td>"
                        f"<td class=num>{_num(row['recall'])}</td><td class=num>{_num(row['f1'])}</td>"
                        f"<td class=num>{row['support']}</td></tr>"
                    )
                body += "</table>"
    if data.get("classifier"):
        body += _classifier_html(data["classifier"], data.get("classifier_examples", []))
    if data["examples"]:
        body += (
            "<h2>Examples</h2><table><tr><th>task</th><th>reasoning</th><th>prompt</th>"
            "<th>reference</th><th>answer</th><th>score</th></tr>"
        )
        for record in data["examples"]:
            mark = "ok" if record["score"] >= 1 else "bad" if record["score"] <= 0 else ""
            body += (
                f"<tr><td>{escape(record['suite'])}/{escape(record['id'])}</td>"
                f"<td>{escape(record['reasoning_effort'])}</td>"
                f"<td><pre>{escape(_prompt(record['messages']))}</pre></td>"
                f"<td><pre>{escape(_json_or_text(record['reference']))}</pre></td>"
                f"<td>{_answer_html(record)}</td>"
                f"<td class='num {mark}'>{escape(record['metric'])} {_num(record['score'])}</td></tr>"
            )
        body += "</table>"
    return _page(title, body)


def compare_html(data: dict[str, Any]) -> str:
    """The page for a comparison (compare.json)."""
    labels = [s["label"] for s in data["subjects"]]
    body = f"<p>{_legend(labels)}</p>"
    body += bar_chart(_chartable(data["metrics"]), labels)
    body += (
        "<h2>Metrics</h2><table><tr><th>metric</th>"
        + "".join(f"<th>{escape(label)}</th>" for label in labels)
        + "</tr>"
    )
    for name, values in data["metrics"].items():
        known = [v for v in values if v is not None]
        best = (min(known) if name in UNBOUNDED else max(known)) if known else None
        body += (
            f"<tr><td>{escape(name)}</td>"
            + "".join(
                f"<td class='num{' best' if v is not None and v == best and len(set(known)) > 1 else ''}'>{_num(v)}</td>"
                for v in values
            )
            + "</tr>"
        )
    body += "</table>"
    body += _perplexity_table(list(zip(labels, data.get("perplexity") or [], strict=False)))
    body += (
        f"<h2>Examples</h2><p class=meta>{data['examples_differing']} of {len(data['examples'])} "
        "answers differ between models (shown first). Differences are marked against the "
        f"first model, {escape(labels[0])}: <ins>added</ins> <del>removed</del>.</p>"
    )
    for example in data["examples"]:
        body += (
            f"<div class=example><p><b>{escape(example['suite'])}/{escape(example['id'])}</b> "
            f"reasoning {escape(example['reasoning_effort'])}, {escape(example['metric'])}"
            f"{'' if example['differs'] else ' — same answer from every model'}</p>"
            f"<pre>{escape(_prompt(example['messages']))}</pre>"
            f"<p>reference: <code>{escape(_json_or_text(example['reference']))}</code></p>"
            "<table><tr><th>model</th><th>answer</th><th>score</th></tr>"
        )
        base = example["outputs"][0]
        for label, output in zip(labels, example["outputs"], strict=True):
            if output is None:
                body += f"<tr><td>{escape(label)}</td><td>(not run)</td><td></td></tr>"
                continue
            if output is base or base is None:
                answer = _answer_html(output)
            else:
                answer = (
                    "<pre>"
                    + "".join(
                        f"<ins>{escape(text)}</ins>"
                        if kind == "insert"
                        else f"<del>{escape(text)}</del>"
                        if kind == "delete"
                        else escape(text)
                        for kind, text in diff_spans(base["output"], output["output"])
                    )
                    + "</pre>"
                    + _answer_html({**output, "output": ""})
                )
            body += (
                f"<tr><td>{escape(label)}</td><td>{answer}</td>"
                f"<td class=num>{_num(output['score'])}</td></tr>"
            )
        body += "</table></div>"
    return _page("Comparison: " + " vs ".join(labels), body)


def _classifier_html(sets: dict[str, Any], examples: list[dict[str, Any]]) -> str:
    """Per label set: accuracy, F1, the confusion matrix; then the examples it got wrong."""
    body = ""
    for name, report in sets.items():
        f1 = report.get("macro_f1", report.get("micro_f1"))
        body += (
            f"<h2>Label set {escape(name)}</h2><p class=meta>{report['examples']} examples, "
            f"accuracy {_num(report['accuracy'])}, F1 {_num(f1)}</p>"
        )
        confusion = report.get("confusion")
        if confusion:
            labels = sorted({*confusion, *(p for row in confusion.values() for p in row)})
            body += (
                "<table><tr><th>gold \\ predicted</th>"
                + "".join(f"<th>{escape(label)}</th>" for label in labels)
                + "</tr>"
            )
            for gold in labels:
                row = confusion.get(gold, {})
                body += (
                    f"<tr><th>{escape(gold)}</th>"
                    + "".join(
                        f"<td class='num{' ok' if gold == p and row.get(p) else ''}'>{row.get(p, 0)}</td>"
                        for p in labels
                    )
                    + "</tr>"
                )
            body += "</table>"
    wrong = [e for e in examples if not e["correct"]]
    if wrong:
        body += (
            f"<h2>Misclassified</h2><p class=meta>{len(wrong)} of {len(examples)} kept examples</p>"
            "<table><tr><th>source</th><th>input</th><th>gold</th><th>predicted</th></tr>"
        )
        for example in wrong[:100]:
            body += (
                f"<tr><td>{escape(example['source'])}</td><td><pre>{escape(example['input'])}</pre>"
                f"</td><td>{escape(json.dumps(example['gold']))}</td>"
                f"<td class=bad>{escape(json.dumps(example['predicted']))}</td></tr>"
            )
        body += "</table>"
    return body
