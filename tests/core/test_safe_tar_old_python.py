"""Unpacking on a Python without tarfile's "data" filter (3.11 before 3.11.4: Debian 12's
3.11.2, the container image's), as backup restore and the GGUF converter install do: plain
files unpack, anything that could leave the target is refused just the same."""

from __future__ import annotations

import io
import tarfile

import pytest

from forgeml.core.safe_tar import extract_plain


def archive(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        member = tarfile.TarInfo(name)
        member.type, member.size = kind, 2
        tar.addfile(member, io.BytesIO(b"ok"))
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r:gz")


@pytest.fixture(autouse=True)
def old_python(monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)


def test_plain_files_unpack(tmp_path):
    extract_plain(archive("artifacts/model/abc/weights.bin"), tmp_path)
    assert (tmp_path / "artifacts/model/abc/weights.bin").read_bytes() == b"ok"


@pytest.mark.parametrize(
    ("name", "kind"),
    [("../outside", tarfile.REGTYPE), ("/etc/passwd", tarfile.REGTYPE), ("link", tarfile.SYMTYPE)],
)
def test_what_could_leave_the_workspace_is_refused(tmp_path, name, kind):
    with pytest.raises(tarfile.TarError, match="refusing"):
        extract_plain(archive(name, kind), tmp_path / "ws")
    assert not (tmp_path / "outside").exists()
