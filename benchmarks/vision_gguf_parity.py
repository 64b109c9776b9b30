"""Does llama.cpp read a forgeml vision-language model's images as forgeml does? The GGUF
export (text model + `mmproj` tower) under `llama-server --mmproj`, against `forgeml serve`
(transformers engine) on the same model, image by image.

    python benchmarks/vision_forms.py --keep /tmp/forms     # once: a trained forms model
    scripts/build_llama_server.sh                           # once: llama-server
    python benchmarks/vision_gguf_parity.py --workspace /tmp/forms/ws --model forms-vl

For each of `--forms` new generated forms (training layouts), the servers answer the
forms question greedily (temperature 0), against `forgeml serve MODEL` (transformers):

- llama-server given the original picture;
- llama-server given the picture resized by forgeml first (whole 16-px tokens), which
  llama.cpp keeps as it is: what a client can do to get one grid everywhere;
- forgeml's own llama.cpp engine serving the export (it does that resizing itself).

Each line counts identical answers and identical prompt token counts (the image's grid
of tokens is the same length only if both sides resize the image alike). A model trained
on forms answers with confident tokens, so f16 rounding rarely flips a greedy choice.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from edge_bundle import ROOT, forgeml, free_port, start, stop

from forgeml.models.image_inputs import ImageShape, data_url, resized_size
from forgeml.quickstart.form_images import QUESTION, field_accuracy, form_records


def ask(port: int, model: str, png: bytes, key: str | None, new_tokens: int) -> tuple[str, int]:
    content = [
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": data_url(png)}},
    ]
    body = {"model": model, "messages": [{"role": "user", "content": content}],
            "max_tokens": new_tokens, "temperature": 0}  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                          headers=headers, timeout=120)  # fmt: skip
    response.raise_for_status()
    answer = response.json()
    return answer["choices"][0]["message"]["content"] or "", answer["usage"]["prompt_tokens"]


def resize_first(png: bytes, shape: ImageShape) -> bytes:
    """The picture as forgeml resizes it (whole image tokens), re-encoded as PNG."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    height, width = resized_size(image.width, image.height, shape)
    buffer = io.BytesIO()
    image.resize((width, height), resample=Image.Resampling.BICUBIC).save(buffer, "PNG")
    return buffer.getvalue()


def source_dir(workspace: Path, export: dict) -> Path:
    """The model directory an export was made from (its config holds the tower's shape)."""
    from forgeml.core.workspace import Workspace

    opened = Workspace.open(workspace)
    try:
        source = opened.registry.resolve(export["metrics"]["source"])
        return opened.root / source.path
    finally:
        opened.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--model", default="forms-vl")
    parser.add_argument("--forms", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--llama-server", default=None, help="default: build/find it")
    args = parser.parse_args()
    llama_server = (
        args.llama_server
        or subprocess.run(
            [str(ROOT / "scripts/build_llama_server.sh")],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    ws = args.workspace
    export = json.loads(forgeml(ws, "--json", "export", args.model, "--format", "gguf"))
    folder = Path(export["path"])
    record = json.loads((folder / "export.json").read_text())["gguf"]
    forms = form_records(args.forms, seed=11)
    scratch = Path(tempfile.mkdtemp(prefix="forgeml-vision-parity-"))

    port = free_port()
    server = [llama_server, "-m", str(folder / record["file"]), "--mmproj",
              str(folder / record["mmproj"]["file"]), "--host", "127.0.0.1", "--port", str(port),
              "--jinja", "-np", "1", "--no-warmup", "-t", "2"]  # fmt: skip
    shape = ImageShape.of(json.loads((source_dir(ws, export) / "config.json").read_text()))
    process = start(server, port, scratch / "llama-server.log")
    try:
        theirs = [ask(port, args.model, png, None, args.new_tokens) for _, png in forms]
        resized = [ask(port, args.model, resize_first(png, shape), None, args.new_tokens)
                   for _, png in forms]  # fmt: skip
    finally:
        stop(process)

    key = json.loads(forgeml(ws, "--json", "keys", "create", "--name", "parity"))["key"]
    port = free_port()
    command = [sys.executable, "-m", "forgeml", "--workspace", str(ws), "serve", args.model,
               "--port", str(port), "--threads", "2", "--job-workers", "0"]  # fmt: skip
    gguf_ref = export["outputs"]["export"]
    command += [gguf_ref]  # the export too: forgeml's llama.cpp engine
    process = start(command, port, scratch / "forgeml.log", ready="/health")
    try:
        mine = [ask(port, args.model, png, key, args.new_tokens) for _, png in forms]
        engine = [ask(port, gguf_ref, png, key, args.new_tokens) for _, png in forms]
    finally:
        stop(process)

    print(f"export: {record['file']} + {record['mmproj']['file']} ({record['mmproj']})")
    print(f"against forgeml serve {args.model} (transformers), {len(forms)} forms:")
    print("                                          answers  prompt tokens")
    for label, other in [("llama-server, original picture", theirs),
                         ("llama-server, resized by forgeml first", resized),
                         ("forgeml llama.cpp engine (f16 export)", engine)]:  # fmt: skip
        same = sum(a[0] == b[0] for a, b in zip(mine, other, strict=True))
        same_prompt = sum(a[1] == b[1] for a, b in zip(mine, other, strict=True))
        print(f"  {label:<40}{same:>3}/{len(forms)}  {same_prompt:>6}/{len(forms)}")
    truth = [form for form, _ in forms]
    print("fields right, forgeml:     ", field_accuracy([a for a, _ in mine], truth))
    print("fields right, llama-server:", field_accuracy([a for a, _ in theirs], truth))
    print("fields right, llama.cpp engine:", field_accuracy([a for a, _ in engine], truth))
    from PIL import Image

    for (_, png), (_, ours), (_, llama) in zip(forms, mine, theirs, strict=True):
        if ours != llama:
            width, height = Image.open(io.BytesIO(png)).size
            print(f"  {width} x {height} px: prompt tokens forgeml {ours}, llama-server {llama}")
    for (a, _), (b, _) in [(a, b) for a, b in zip(mine, theirs, strict=True) if a[0] != b[0]][:3]:
        print(f"  forgeml {a!r}\n  llama   {b!r}")


if __name__ == "__main__":
    main()
