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
import math
import os
import shutil
from pathlib import Path

from fitformer.errors import FitformerError
from fitformer.paths import runs_dir

METRICS_SCHEMA_VERSION = 1
#: Version of the training recipes and of the run-key schema (design.md §9, revised
#: 2026-11-30). Bump it when a recipe changes what a run with the same key would train; a
#: fitformer release alone no longer orphans cached runs. ``run.json`` still records the
#: fitformer version (outside the hash).
RECIPE_VERSION = 2
#: Fields of ``run.json`` that describe the run but are not part of its key: the fitformer
#: release and the torch threads it trained with (results are equal at equal thread counts,
#: issue 21; a resumed run records the count of its last part).
UNHASHED_FIELDS = ("fitformer_version", "torch_threads")
COMPLETE_FILES = ("config.json", "model.safetensors", "metrics.json", "run.json")


def key_hash(key: dict) -> str:
    """First 16 hex digits of the sha256 of the key as canonical JSON (without
    :data:`UNHASHED_FIELDS`)."""
    key = {k: v for k, v in key.items() if k not in UNHASHED_FIELDS}
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_path(key: dict) -> Path:
    """Where the run with ``key`` lives (complete or not)."""
    return runs_dir() / key_hash(key)


def partial_path(key: dict) -> Path:
    """Where the run with ``key`` is built and checkpointed while it trains."""
    return runs_dir() / ".partial" / key_hash(key)


#: Resume state in a build folder: the checkpoint and the step it holds (written by
#: :func:`fitformer.training.loop.train_classifier`), dropped when the run is committed.
RESUME_FILES = ("checkpoint.pt", "checkpoint.json")


def saved_steps(key: dict) -> int:
    """The optimiser steps the checkpoint of the run with ``key`` holds (``checkpoint.json``
    beside ``checkpoint.pt`` in its build folder); 0 when it has none or the file is
    unreadable (a resumed run then starts over only in this estimate, not in training)."""
    folder = partial_path(key)
    if not (folder / "checkpoint.pt").is_file():
        return 0
    try:
        step = json.loads((folder / "checkpoint.json").read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return step if isinstance(step, int) and step > 0 else 0


class Uncached:
    """What a training entry point returns for ``cached_only=True`` when its run is not
    cached: the run's ``key``, and :attr:`saved_steps` of its checkpoint. Falsy, like the
    ``None`` it replaces."""

    def __init__(self, key: dict):
        self.key = key

    def __bool__(self) -> bool:
        return False

    @property
    def saved_steps(self) -> int:
        """:func:`saved_steps` of :attr:`key` (read on each access)."""
        return saved_steps(self.key)

    def __repr__(self) -> str:
        return f"Uncached({key_hash(self.key)})"


def is_complete(path: Path) -> bool:
    return all((path / f).is_file() for f in COMPLETE_FILES)


def find_run(key: dict) -> Path | None:
    """The completed run directory for ``key``, or ``None`` (also for a run cached before
    non-finite metrics were refused: its ``metrics.json`` holds ``NaN`` or ``Infinity``, and
    it is trained again)."""
    path = run_path(key)
    if not is_complete(path):
        return None
    try:
        json.loads((path / "metrics.json").read_text(), parse_constant=_reject_constant)
    except _NonFinite:
        return None
    except (OSError, ValueError):
        pass  # reported with its fix by load_run_info / read_json
    return path


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str):
    raise _NonFinite(name)


def strict_json(obj):
    """``obj`` made strict-JSON safe: every non-finite float (``NaN``, ``inf``; Python,
    numpy or 0-d torch) becomes ``None`` (JSON ``null``), numpy and 0-d torch scalars become
    Python numbers, tuples become lists; other leaves are returned as they are."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    item = getattr(obj, "item", None)           # numpy scalars, 0-d arrays and tensors
    if callable(item) and getattr(obj, "ndim", 0) == 0:
        try:
            return strict_json(item())
        except (TypeError, ValueError, RuntimeError):
            return obj
    return obj


def non_finite_fields(obj, prefix: str = "") -> list[str]:
    """Dotted paths of the non-finite numbers in ``obj`` (``["loss.dev"]``)."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in non_finite_fields(v, f"{prefix}{k}.")]
    if isinstance(obj, list | tuple):
        return [p for i, v in enumerate(obj) for p in non_finite_fields(v, f"{prefix}{i}.")]
    if isinstance(obj, bool | int | str) or obj is None:
        return []
    try:
        value = float(obj)
    except (TypeError, ValueError):
        return []
    return [] if math.isfinite(value) else [prefix.rstrip(".")]


def dumps_strict(obj, **kwargs) -> str:
    """``json.dumps`` of :func:`strict_json` ``(obj)``: never a bare ``NaN`` or
    ``Infinity`` (``allow_nan=False``); unknown objects are written as ``str``."""
    kwargs.setdefault("default", str)
    return json.dumps(strict_json(obj), allow_nan=False, **kwargs)


def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` as indented strict JSON atomically (temp file + rename): non-finite
    numbers are written as ``null`` (:func:`strict_json`).

    ``metrics.json`` marks a complete, cached run, so a run with a non-finite metric is
    never cached: its ``metrics.json`` is not written.

    Raises:
        FitformerError: ``path`` is a ``metrics.json`` and ``obj`` has a non-finite metric
            (the message names it and the fix).
    """
    if path.name == "metrics.json":
        bad = non_finite_fields(obj)
        if bad:
            raise FitformerError(
                f"the run in {path.parent} has non-finite metrics ({', '.join(bad[:6])}), so "
                "it is not cached: training diverged. Lower --lr, check that the model's "
                "weights are finite (fitformer trains in float32), and run the command again."
            )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps_strict(obj, indent=2, sort_keys=False) + "\n")
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
        for f in RESUME_FILES:
            (partial / f).unlink(missing_ok=True)
    partial.mkdir(parents=True, exist_ok=True)
    import torch

    from fitformer._version import __version__

    write_json(partial / "run.json", {**key, "fitformer_version": __version__,
                                      "torch_threads": torch.get_num_threads()})
    return partial


def commit_run(partial: Path, key: dict) -> Path:
    """Move a finished ``partial`` folder into its run directory and drop resume state."""
    for leftover in RESUME_FILES:
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
