"""`data.ingest`: files and directories in, one dataset artifact (Parquet shards) out.

forgeml data ingest docs/ tickets.jsonl --name support-docs
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from forgeml.core.atomic import write_text_atomic
from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.stages import stage
from forgeml.data.dataset import DatasetWriter
from forgeml.data.readers import Document, ReadOptions, iter_documents
from forgeml.data.scan import ExecutorParams, default_workers

MAX_REJECTIONS_IN_RECORD = 200  # the full list goes to runs/<id>/rejections.jsonl


class IngestParams(ExecutorParams):
    paths: list[Path] = Field(
        min_length=1, description="Files and directories to read (recursively)."
    )
    name: str | None = Field(
        default=None, description="Name the dataset (resolves to its newest version)."
    )
    text_field: str = Field(
        default="text", description="jsonl field / csv or parquet column holding the text."
    )
    metadata_fields: list[str] = Field(
        default_factory=list, description="Other fields copied into metadata."
    )
    fallback_encoding: str | None = Field(
        default="cp1252", description="Tried for non-UTF-8 text; null rejects it."
    )
    strict: bool = Field(
        default=False, description="Stop at the first unreadable file instead of reporting it."
    )
    max_file_mb: int = Field(
        default=1024,
        ge=1,
        le=1 << 20,
        description="Largest file read whole (txt, md, html, pdf) and longest jsonl/csv line, "
        "after decompression; bigger ones are rejected (a gzip bomb cannot fill memory).",
    )
    images: bool = Field(
        default=False,
        description="Image files and PDF pages become pictures in chat records (a vision "
        "model's data): the picture and `image_instruction` as the user turn, a page's text "
        "layer as the answer.",
    )
    image_instruction: str = Field(
        default="Transcribe this page.",
        min_length=1,
        max_length=2000,
        description="With images: the user's words beside each picture.",
    )
    pdf_dpi: int = Field(
        default=100,
        ge=36,
        le=300,
        description="With images: the resolution PDF pages are drawn at.",
    )


@stage(
    "data.ingest", params=IngestParams, outputs={"dataset": "dataset"}, sources=lambda p: p.paths
)
def ingest(ctx: StageContext, params: IngestParams):
    """Read txt, md, html, pdf, jsonl, csv and parquet files (and .gz) into a dataset."""
    options = ReadOptions(
        text_field=params.text_field,
        metadata_fields=tuple(params.metadata_fields),
        fallback_encoding=params.fallback_encoding,
        strict=params.strict,
        max_file_bytes=params.max_file_mb << 20,
        images=params.images,
        image_instruction=params.image_instruction,
        pdf_dpi=params.pdf_dpi,
    )
    writer = ctx.new_artifact("dataset")
    dataset = DatasetWriter(writer.path)
    rejections: list[dict] = []
    sources: dict[tuple[str, str], int] = {}  # (name, sha256): two named folders may share names
    file_map = None
    if params.executor == "ray":  # each file read by a Ray task, taken back in order
        from forgeml.data.ray_executor import ordered_map

        def file_map(function, tasks):
            return ordered_map(function, tasks, cpus=default_workers(), address=params.ray_address)

    for item in iter_documents(params.paths, **options.model_dump(), file_map=file_map):
        if isinstance(item, Document):
            dataset.add(item.to_record())
            file = (item.source, item.source_sha256)
            sources[file] = sources.get(file, 0) + 1
        else:
            rejections.append(item.to_record())
            if len(rejections) <= MAX_REJECTIONS_IN_RECORD:
                ctx.warn(str(item), **item.to_record())
    summary = dataset.close(files=len(sources), rejected=len(rejections))
    write_text_atomic(
        ctx.work_dir / "rejections.jsonl",
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejections),
    )
    if dataset.documents == 0:
        ctx.discard(writer)
        first = (
            f"; first: {rejections[0]['source']}: {rejections[0]['reason']}" if rejections else ""
        )
        listed = f"All rejections are listed in {ctx.work_dir / 'rejections.jsonl'}."
        advice = rejections[0].get("hint") if rejections else None
        raise InputError(
            f"no documents could be read from {', '.join(map(str, params.paths))}{first}",
            hint=f"{advice}. {listed}" if advice else listed,
        )
    writer.meta.update(documents=summary["documents"], characters=summary["characters"])
    ctx.set_metrics(
        documents=summary["documents"],
        characters=summary["characters"],
        files=len(sources),
        rejected=len(rejections),
        rejections=rejections[:MAX_REJECTIONS_IN_RECORD],
    )
    artifact = ctx.commit(writer)
    ctx.name(artifact, params.name)
    return {"dataset": artifact}
