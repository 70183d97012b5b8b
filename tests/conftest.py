"""Shared fixtures.

Tests never write into the user's cache: ``FITFORMER_HOME`` points at a temporary folder
whose ``downloads``, ``models`` and ``data`` link to the real cache (filled by
``./setup.sh`` / ``fitformer fetch``), so real data is read but runs are private; ``kernels``
links too, so the CPU kernel is compiled once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None)
settings.load_profile("ci")

# Shared with the real cache: fetched inputs, and the compiled CPU kernel (built once).
SHARED = ("downloads", "models", "data", "kernels")

REAL_HOME = Path(os.environ.get("FITFORMER_HOME") or "").expanduser() if os.environ.get(
    "FITFORMER_HOME") else None


def _real_home() -> Path:
    from fitformer.paths import fitformer_home

    return REAL_HOME or fitformer_home()


@pytest.fixture(scope="session")
def real_cache() -> Path:
    """The real cache with the fetched model and data; fails loudly if not fetched."""
    home = _real_home()
    from fitformer.data.fetch import SOURCES

    missing = [s.name for s in SOURCES.values()
               if not (home / s.dest_kind / s.dest_name / "fitformer-source.json").is_file()]
    if missing:
        pytest.fail(f"real inputs {missing} are not in {home}: run ./setup.sh "
                    "(or `fitformer fetch`) first")
    return home


@pytest.fixture
def home(tmp_path, monkeypatch, real_cache) -> Path:
    """A private FITFORMER_HOME that sees the real fetched model and data."""
    h = tmp_path / "home"
    h.mkdir()
    for sub in SHARED:
        (real_cache / sub).mkdir(exist_ok=True)
        (h / sub).symlink_to(real_cache / sub)
    monkeypatch.setenv("FITFORMER_HOME", str(h))
    return h


@pytest.fixture
def empty_home(tmp_path, monkeypatch) -> Path:
    """A FITFORMER_HOME with nothing fetched."""
    h = tmp_path / "empty-home"
    h.mkdir()
    monkeypatch.setenv("FITFORMER_HOME", str(h))
    return h


@pytest.fixture(scope="session")
def tiny_dense(real_cache, tmp_path_factory):
    """A real dense fine-tune on the `tiny` budget (320 real sentences), in its own home;
    returns (home, RunResult)."""
    from fitformer.training import finetune

    h = tmp_path_factory.mktemp("tiny-home")
    for sub in SHARED:
        (real_cache / sub).mkdir(exist_ok=True)
        (h / sub).symlink_to(real_cache / sub)
    mp = pytest.MonkeyPatch()
    mp.setenv("FITFORMER_HOME", str(h))
    try:
        yield h, finetune("default", "rotten-tomatoes", budget="tiny")
    finally:
        mp.undo()


@pytest.fixture
def in_tiny_home(tiny_dense, monkeypatch):
    """Run the test inside the tiny dense run's FITFORMER_HOME."""
    monkeypatch.setenv("FITFORMER_HOME", str(tiny_dense[0]))
    return tiny_dense


@pytest.fixture
def tiny_hp_run(in_tiny_home):
    """(dense RunResult, RunResult of HP at 0.8 pruned from it on the tiny budget); cached
    after the first use in the session."""
    from fitformer.sparsity.prune import PruneSpec, prune

    _, dense = in_tiny_home
    return dense, prune(spec=PruneSpec("hp", 0.8), from_dir=dense.path, budget="tiny")
