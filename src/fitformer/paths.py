"""Where fitformer keeps what it fetches and what it computes.

``$FITFORMER_HOME`` (default: the XDG cache directory, ``~/.cache/fitformer`` on Linux) holds

- ``downloads/``: the registry files, exactly as fetched (verified by sha256);
- ``models/<name>/``: extracted pretrained models (Hugging Face ``save_pretrained`` folders);
- ``data/<name>/``: extracted datasets;
- ``runs/<key hash>/``: training runs (design.md §9);
- ``dse/<digest>.json``: design points found by the design-space exploration.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def fitformer_home() -> Path:
    """The cache root: ``$FITFORMER_HOME`` if set, else the user cache dir for ``fitformer``."""
    env = os.environ.get("FITFORMER_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("fitformer"))


def downloads_dir() -> Path:
    return fitformer_home() / "downloads"


def models_dir() -> Path:
    return fitformer_home() / "models"


def data_dir() -> Path:
    return fitformer_home() / "data"


def runs_dir() -> Path:
    return fitformer_home() / "runs"


def dse_dir() -> Path:
    return fitformer_home() / "dse"
