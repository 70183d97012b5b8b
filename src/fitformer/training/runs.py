"""Run directories: the cache of training runs (design.md §9).

A run lives in ``$FITFORMER_HOME/runs/<hash of its key>/``: a Hugging Face
``save_pretrained`` folder (``config.json``, ``model.safetensors``, tokenizer files) plus
``metrics.json`` and ``run.json`` (the key). While training, it is built in
``runs/.partial/<hash>/`` (with a ``checkpoint.pt`` for resuming) and renamed into place only
when complete, so a run directory is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from fitformer.errors import FitformerError
from fitformer.paths import runs_dir

METRICS_SCHEMA_VERSION = 1
COMPLETE_FILES = ("config.json", "model.safetensors", "metrics.json", "run.json")


def key_hash(key: dict) -> str:
    """First 16 hex digits of the sha256 of the key as canonical JSON."""
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_path(key: dict) -> Path:
    """Where the run with ``key`` lives (complete or not)."""
    return runs_dir() / key_hash(key)


def partial_path(key: dict) -> Path:
    """Where the run with ``key`` is built and checkpointed while it trains."""
    return runs_dir() / ".partial" / key_hash(key)


def is_complete(path: Path) -> bool:
    return all((path / f).is_file() for f in COMPLETE_FILES)


def find_run(key: dict) -> Path | None:
    """The completed run directory for ``key``, or ``None``."""
    path = run_path(key)
    return path if is_complete(path) else None


def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` as indented JSON atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> dict:
    """Read a JSON object, with a user error naming ``path`` if missing or corrupt."""
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise FitformerError(f"{path} is missing; {what}.") from None
    except (OSError, ValueError) as exc:
        raise FitformerError(f"{path} is corrupt ({exc}); {what}.") from None
    if not isinstance(obj, dict):
        raise FitformerError(f"{path} is not a JSON object; {what}.")
    return obj


_LOCKS: dict[Path, int] = {}


def _lock(partial: Path) -> None:
    """Hold an exclusive lock on ``partial`` for this process (released by
    :func:`commit_run` or at exit), so two processes never train one run at once.

    Raises:
        FitformerError: another process holds it.
    """
    import fcntl

    if partial in _LOCKS:
        return
    lock = partial.parent / f"{partial.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FitformerError(
            f"another fitformer process is training this run right now (lock {lock}); let "
            "it finish (its result is then cached) or stop it, and run the command again."
        ) from None
    _LOCKS[partial] = fd


def _unlock(partial: Path) -> None:
    fd = _LOCKS.pop(partial, None)
    if fd is not None:
        os.close(fd)


def start_partial(key: dict, force: bool = False) -> Path:
    """The build folder of ``key`` with its ``run.json`` written; an existing checkpoint is
    kept for resuming unless ``force`` (start over). This process holds the run's lock until
    :func:`commit_run`.

    Raises:
        FitformerError: another process is training the same run.
    """
    partial = partial_path(key)
    _lock(partial)
    if force:
        (partial / "checkpoint.pt").unlink(missing_ok=True)
    partial.mkdir(parents=True, exist_ok=True)
    write_json(partial / "run.json", key)
    return partial


def commit_run(partial: Path, key: dict) -> Path:
    """Move a finished ``partial`` folder into its run directory and drop resume state."""
    for leftover in ("checkpoint.pt",):
        (partial / leftover).unlink(missing_ok=True)
    # safetensors and transformers write through private temp files (mode 0600); give the
    # run's files the user's usual permissions so a shared cache stays readable.
    umask = os.umask(0)
    os.umask(umask)
    for f in partial.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)
    final = run_path(key)
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, final)
    _unlock(partial)
    return final


def load_run_info(path: Path) -> tuple[dict, dict]:
    """``(run.json, metrics.json)`` of a run directory.

    Raises:
        FitformerError: not a run directory, or its JSON files are corrupt.
    """
    if not path.is_dir():
        raise FitformerError(f"run directory {path} does not exist; check the path.")
    fix = "re-create the run (fitformer finetune / prune)"
    return read_json(path / "run.json", fix), read_json(path / "metrics.json", fix)
