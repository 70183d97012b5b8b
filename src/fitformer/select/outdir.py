"""The files `fitformer select` owns in its ``--out`` folder: which they are, the checks made
before any work, and their removal before a new report is written.

select writes ``report.json``, ``report.html``, three plots, and, when a device qualifies,
``design.json``, ``model.fitf`` and ``model/`` (a copy of the chosen run). A reused
``--out`` must not keep the files of an earlier answer beside a new report (a stale
``model.fitf`` next to a report whose answer is dense, or none), so every owned name is
removed before the new files are written. ``model/`` is a folder a user may have made
for other reasons: it is replaced only when it carries select's marker file
(:data:`MARKER`), or when it predates the marker and the ``report.json`` beside it lists
it; any other ``model/`` is refused. Anything else in ``--out`` is left alone.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from fitformer.errors import FitformerError

#: Files select writes in ``--out`` (a file of one of these names is select's own).
OWNED_FILES = ("report.json", "report.html", "accuracy.png", "latency.png",
               "utilization.png", "design.json", "model.fitf")
#: The folder select writes in ``--out``: the chosen run's copy.
MODEL_DIR = "model"
#: The folder ``select --hls`` writes the answer's HLS project into (removed with the other
#: files of an earlier answer when it holds a generated project's ``project.json``).
HLS_DIR = "hls"
#: The marker select writes into ``model/``: which query wrote it (JSON).
MARKER = ".fitformer-select.json"


def check_out_dir(out_dir: Path) -> None:
    """Refuse an ``--out`` that select cannot write into without harm, before any work and
    without creating anything: ``out_dir`` a file, not writable, a folder where select
    writes a file (e.g. a folder ``report.json``), a file named ``model``, or a
    ``model/`` folder that select did not write.

    Raises:
        FitformerError: naming the path and the fix.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise FitformerError(f"--out {out_dir} is a file; give a folder.")
    probe = out_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:        # a probe folder made and removed at once (access() says yes to root)
        with tempfile.TemporaryDirectory(dir=probe, prefix=".fitformer-probe-"):
            pass
    except OSError as exc:
        raise FitformerError(f"--out {out_dir}: cannot write there ({probe}: "
                             f"{exc.strerror}); give a writable folder.") from None
    if not out_dir.is_dir():
        return
    for name in OWNED_FILES:
        path = out_dir / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise FitformerError(
                f"--out {out_dir}: {path} is {_what(path)}, where select writes its "
                f"{name} file; move it away or give another --out.")
    model = out_dir / MODEL_DIR
    if model.is_symlink() or (model.exists() and not model.is_dir()):
        raise FitformerError(
            f"--out {out_dir}: {model} is {_what(model)}, where select writes the chosen "
            "model's folder; move it away or give another --out.")
    if model.is_dir() and not written_by_select(model):
        raise FitformerError(
            f"--out {out_dir}: {model}/ was not written by fitformer select (it has no "
            f"{MARKER} and no report.json beside it lists it), and select would replace "
            "it with the chosen model; move it away or give another --out.")


def written_by_select(model_dir: Path) -> bool:
    """Whether ``model_dir`` (``--out``'s ``model/``) is select's: it carries
    :data:`MARKER`, or (written before the marker existed) the ``report.json`` beside it
    names it as its ``model_dir`` artifact and it holds a run's ``run.json``."""
    if (model_dir / MARKER).is_file():
        return True
    try:
        report = json.loads((model_dir.parent / "report.json").read_text())
        listed = Path(str(report["artifacts"]["model_dir"])).name == model_dir.name
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return listed and (model_dir / "run.json").is_file()


def clear_owned(out_dir: Path) -> list[str]:
    """Remove every file select owns from ``out_dir`` (and ``model/`` when it is
    select's), so that no file of an earlier answer stays beside the new report.

    Returns:
        The names removed.

    Raises:
        FitformerError: what :func:`check_out_dir` refuses.
    """
    check_out_dir(out_dir)
    removed = []
    for name in OWNED_FILES:
        path = out_dir / name
        if path.is_file():
            path.unlink()
            removed.append(name)
    model = out_dir / MODEL_DIR
    if model.is_dir():
        shutil.rmtree(model)
        removed.append(MODEL_DIR)
    hls = out_dir / HLS_DIR      # select --hls's project (only when fitformer hls wrote it)
    if hls.is_dir() and not hls.is_symlink() and (hls / "project.json").is_file():
        shutil.rmtree(hls)
        removed.append(HLS_DIR)
    return removed


def mark_model_dir(model_dir: Path, run_dir: str | Path, best_device: str) -> None:
    """Write :data:`MARKER` into ``model_dir``: the run it copies and the device chosen, so
    that a later select knows the folder is its own and may replace it."""
    (model_dir / MARKER).write_text(json.dumps({
        "written_by": "fitformer select", "run_dir": str(run_dir),
        "best_device": best_device}, indent=2) + "\n")


def _what(path: Path) -> str:
    if path.is_symlink():
        return "a symbolic link"
    if path.is_dir():
        return "a folder"
    return "a file" if path.is_file() else "not a regular file"
