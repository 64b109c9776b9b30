"""Chat data with images, as a user brings it: a jsonl whose user turns point at image
files beside it (or carry data URLs), through `forgeml data validate` and `data ingest`."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from forgeml.cli.app import app
from forgeml.core.workspace import Workspace
from forgeml.data.dataset import iter_records

runner = CliRunner()


def cli(workspace: Path, *args: str, code: int = 0):
    result = runner.invoke(app, ["--workspace", str(workspace), "--json", *args])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if code == 0 else result.output


def png(colour: tuple[int, int, int], size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def chat(image: dict, answer: str = "red") -> dict:
    return {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Colour?"}, image]},
            {"role": "assistant", "content": answer},
        ]
    }


def file_part(name: str) -> dict:
    return {"type": "image_url", "image_url": {"url": name}}


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_ingest_makes_image_files_part_of_the_dataset(tmp_path):
    folder = tmp_path / "chats"
    (folder / "img").mkdir(parents=True)
    red, blue = png((220, 20, 20)), png((20, 20, 220))
    (folder / "img" / "red.png").write_bytes(red)
    (folder / "img" / "blue.png").write_bytes(blue)
    (folder / "img" / "broken.png").write_bytes(red[:60])  # cut in the pixel data
    (tmp_path / "secret.png").write_bytes(red)
    inline = {
        "type": "image_url",
        "image_url": "data:image/png;base64," + base64.b64encode(blue).decode(),
    }
    source = write_lines(
        folder / "chats.jsonl",
        [
            chat(file_part("img/red.png")),
            chat(inline, "blue"),  # Mistral's shape, already inline
            chat(file_part("img/missing.png")),
            chat(file_part("img/broken.png")),
            chat(file_part("../secret.png")),
            chat(file_part("https://example.com/a.png")),
            chat(file_part("img/blue.png"), "blue"),
        ],
    )

    report = runner.invoke(app, ["data", "validate", str(source), "--format", "chat"])
    assert report.exit_code == 2
    assert (
        f"{source}:3: messages[0].content[1]: image file not found: img/missing.png"
        in report.output
    )
    assert f"{source}:4: messages[0].content[1]: the image cannot be decoded" in report.output
    assert (
        f"{source}:5: messages[0].content[1]: the image '../secret.png' is outside" in report.output
    )
    assert f"{source}:6: messages[0].content[1]: image URLs are never fetched" in report.output
    assert "3 of 7 records valid" in report.output

    result = cli(tmp_path / "ws", "data", "ingest", str(source), "--name", "colours")
    assert result["metrics"]["documents"] == 3  # the bad lines are rejects, the rest kept
    workspace = Workspace.open(tmp_path / "ws")
    dataset = workspace.registry.resolve("colours", kind="dataset")
    rows = list(iter_records(workspace.root / dataset.path))
    workspace.close()
    first = rows[0]["messages"][0]["content"][1]["image_url"]["url"]
    assert first == "data:image/png;base64," + base64.b64encode(red).decode()
    assert rows[0]["metadata"]["images"] == [
        {"sha256": hashlib.sha256(red).hexdigest(), "bytes": len(red), "width": 40,
         "height": 30, "format": "image/png"}
    ]  # fmt: skip
    assert rows[0]["text"] == "Colour?\n\nred"

    assessed = cli(tmp_path / "ws", "data", "assess", "colours", "--size", "tiny")
    assert assessed["metrics"]["images"] == 3
    report = json.loads((Path(assessed["html"]).parent / "report.json").read_text())["images"]
    assert report["documents"] == 3 and report["formats"] == {"image/png": 3}
    assert report["repeated"] == 1  # blue.png is also the inline blue image
    assert report["bytes"] == len(red) + 2 * len(blue)

    # The dataset holds the images: changing a file changes the next ingest's hash.
    (folder / "img" / "red.png").write_bytes(png((200, 0, 0)))
    again = cli(tmp_path / "ws", "data", "ingest", str(source))
    assert again["outputs"]["dataset"] != result["outputs"]["dataset"]


def forgeml(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed CLI in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "forgeml", "--workspace", str(workspace), *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def scans_folder(folder: Path) -> Path:
    """A born-digital PDF (text layer), a scanned one (a picture only), a photo and a
    PNG cut short, as a scanner share holds them."""
    from test_readers import make_pdf

    folder.mkdir(parents=True)
    (folder / "invoice.pdf").write_bytes(make_pdf(["Invoice 42 total 19.99 EUR", "Page two"]))
    page = Image.new("RGB", (300, 200), "white")
    page.paste((200, 30, 30), (20, 20, 120, 80))
    page.save(folder / "scanned.pdf")  # Pillow writes an image-only PDF, like a scanner
    (folder / "photo.png").write_bytes(png((20, 160, 20), (64, 48)))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return folder


def test_pdf_pages_and_image_files_become_pictures_with_their_text(tmp_path):
    folder = scans_folder(tmp_path / "scans")
    made = forgeml(tmp_path / "ws", "--json", "data", "ingest", str(folder), "--images",
                   "--instruction", "Read this page.", "--dpi", "72", "--name", "scans")  # fmt: skip
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    assert result["metrics"]["documents"] == 4 and result["metrics"]["rejected"] == 1
    (rejected,) = result["metrics"]["rejections"]
    assert rejected["source"].endswith("broken.png") and "cannot be decoded" in rejected["reason"]
    ws = Workspace.open(tmp_path / "ws")
    try:
        records = list(iter_records(ws.root / ws.registry.resolve("scans").path))
    finally:
        ws.close()
    by_place = {(r["source"].removeprefix("scans/"), r["metadata"].get("page")): r for r in records}
    assert set(by_place) == {("invoice.pdf", 1), ("invoice.pdf", 2), ("scanned.pdf", 1),
                             ("photo.png", None)}  # fmt: skip
    first = by_place[("invoice.pdf", 1)]
    user, answer = first["messages"]
    assert user["content"][1] == {"type": "text", "text": "Read this page."}
    assert answer == {"role": "assistant", "content": "Invoice 42 total 19.99 EUR"}
    url = user["content"][0]["image_url"]["url"]
    data = base64.b64decode(url.split(",", 1)[1])
    picture = Image.open(io.BytesIO(data))
    assert picture.size == (612, 792)  # US Letter at 72 dpi
    assert first["metadata"]["images"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(by_place[("scanned.pdf", 1)]["messages"]) == 1  # no text: a prompt to answer
    assert len(by_place[("photo.png", None)]["messages"]) == 1
    assessed = json.loads(forgeml(tmp_path / "ws", "--json", "data", "assess", "scans").stdout)
    assert assessed["metrics"]["images"] == 4  # the full profile is in the report
    assert assessed["metrics"]["structure"] == {"text": 0, "chat": 2, "preference": 0, "prompt": 2}

    # The same files in another folder give the same dataset, byte for byte.
    moved = tmp_path / "elsewhere" / "deeper" / "scans"  # Pillow dates its PDFs: copy them
    shutil.copytree(folder, moved)
    again = forgeml(tmp_path / "ws2", "--json", "data", "ingest", str(moved), "--images",
                    "--instruction", "Read this page.", "--dpi", "72")  # fmt: skip
    assert json.loads(again.stdout)["outputs"]["dataset"] == result["outputs"]["dataset"]


def test_pictures_need_the_flag_and_a_sane_resolution(tmp_path):
    folder = scans_folder(tmp_path / "scans")
    text_only = forgeml(tmp_path / "ws", "data", "ingest", str(folder / "photo.png"))
    assert text_only.returncode != 0
    assert "an image file" in text_only.stderr and "--images" in text_only.stderr
    too_fine = forgeml(tmp_path / "ws", "data", "ingest", str(folder), "--images", "--dpi", "5000")
    assert too_fine.returncode == 2 and "pdf_dpi" in too_fine.stderr
    assert "Traceback" not in text_only.stderr + too_fine.stderr
