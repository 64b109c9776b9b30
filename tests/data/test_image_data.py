"""Chat data with images, as a user brings it: a jsonl whose user turns point at image
files beside it (or carry data URLs), through `forgeml data validate` and `data ingest`."""

from __future__ import annotations

import base64
import hashlib
import io
import json
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
