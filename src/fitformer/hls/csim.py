"""``fitformer csim``: compile a generated HLS project with g++ and the open ``ap_types``
headers (vendored from the hls4ml wheel, Apache-2.0: ``fitformer/hls/ap_types``), run its
testbench on the real sentences it holds and compare with the exact fixed-point path."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from fitformer.errors import FitformerError

AP_TYPES = Path(__file__).parent / "ap_types"
CXXFLAGS = ("-std=c++14", "-ffp-contract=off", "-fno-fast-math")


def _gxx() -> str:
    gxx = shutil.which(os.environ.get("CXX", "g++"))
    if gxx is None:
        raise FitformerError("g++ was not found; install it (Debian: apt-get install g++) or "
                             "set CXX to a C++14 compiler.")
    return gxx


def _project(prj: str | Path) -> tuple[Path, dict]:
    # Absolute: g++ and the testbench run with the project as working directory.
    prj = Path(prj).expanduser().resolve()
    if not (prj / "project.json").is_file():
        raise FitformerError(f"{prj} is not a generated HLS project (no project.json); "
                             "create one with `fitformer hls --pruned DIR --device ID --out "
                             f"{prj}`.")
    try:
        rec = json.loads((prj / "project.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FitformerError(f"{prj / 'project.json'} is not valid JSON ({e}); generate the "
                             "project again with `fitformer hls`.") from None
    if not isinstance(rec, dict) or rec.get("complete") is False or "files" not in rec:
        again = (f"`{rec['command']}`" if isinstance(rec, dict) and rec.get("command")
                 else "the `fitformer hls` command that writes it")
        raise FitformerError(f"{prj} holds an incomplete project (its generation was "
                             f"interrupted, or project.json is not fitformer's): run {again} "
                             "again.")
    return prj, rec


def _write_again(prj: Path, rec: dict) -> str:
    """The command that writes the project in ``prj`` again: the recorded one with
    ``--out prj`` (the folder may have been copied or moved); for a project written before
    ``project.json`` recorded it, its run, device, linear and sentence count."""
    import shlex

    command = rec.get("command")
    if isinstance(command, str) and command.startswith("fitformer hls "):
        args = shlex.split(command)
        if "--out" in args[:-1]:
            args[args.index("--out") + 1] = str(prj)
            return shlex.join(args)
    args = ["fitformer", "hls", "--pruned", str(rec.get("run", "RUN")), "--device",
            str(rec.get("device", "ID")), "--out", str(prj)]
    if rec.get("linear"):
        args += ["--linear", str(rec["linear"])]
    if rec.get("sentences") not in (None, 200):
        args += ["--sentences", str(rec["sentences"])]
    return shlex.join(args)


def check_files(prj: Path, rec: dict) -> None:
    """Refuse a project whose binaries (``weights/``, ``tb_data/``) are missing or differ
    from what ``fitformer hls`` wrote (size and SHA-256 in ``project.json``'s ``files``;
    a project without that record is not checked). The C++ sources may be edited.

    Raises:
        FitformerError: naming the first damaged file and the fix.
    """
    import hashlib

    for rel, want in (rec.get("files") or {}).items():
        if not rel.startswith(("weights/", "tb_data/")):
            continue
        path = prj / rel
        fix = f"; the project is damaged: generate it again with `{_write_again(prj, rec)}`."
        if not path.is_file():
            raise FitformerError(f"{path} is missing" + fix)
        size = path.stat().st_size
        if size != want["bytes"]:
            raise FitformerError(f"{path} holds {size:,} bytes, project.json says "
                                 f"{want['bytes']:,}" + fix)
        if hashlib.sha256(path.read_bytes()).hexdigest() != want["sha256"]:
            raise FitformerError(f"{path} differs from the file fitformer hls wrote "
                                 "(SHA-256)" + fix)


def syntax_check(prj: str | Path) -> list[str]:
    """``g++ -fsyntax-only -Wall`` on the project's C++ (firmware and testbench).

    Returns:
        the compiler's warning lines (empty when clean).

    Raises:
        FitformerError: a compile error (its first lines quoted).
    """
    prj, _ = _project(prj)
    cmd = [_gxx(), *CXXFLAGS, "-fsyntax-only", "-Wall", "-Wno-unknown-pragmas",
           "-isystem", str(AP_TYPES), f"-I{prj / 'firmware'}", "firmware/fitformer.cpp",
           "tb/testbench.cpp"]
    res = subprocess.run(cmd, cwd=prj, capture_output=True, text=True)
    if res.returncode:
        raise FitformerError(f"g++ -fsyntax-only failed on {prj}:\n{res.stderr[-2000:]}")
    return [ln for ln in res.stderr.splitlines() if "warning:" in ln]


def build(prj: str | Path, opt: str = "-O2", count_trips: bool = False) -> tuple[Path, float]:
    """Compile the project's testbench into ``PRJ/build/csim`` (``csim-trips`` with the loop
    trip counters of ``-DFITFORMER_COUNT_TRIPS``); ``(binary, seconds)``."""
    prj, _ = _project(prj)
    (prj / "build").mkdir(exist_ok=True)
    exe = prj / "build" / ("csim-trips" if count_trips else "csim")
    start = time.perf_counter()
    cmd = [_gxx(), *CXXFLAGS, opt, "-Wno-unknown-pragmas", "-isystem", str(AP_TYPES),
           *(["-DFITFORMER_COUNT_TRIPS"] if count_trips else []),
           f"-I{prj / 'firmware'}", "firmware/fitformer.cpp", "tb/testbench.cpp", "-o",
           str(exe)]
    res = subprocess.run(cmd, cwd=prj, capture_output=True, text=True)
    if res.returncode:
        raise FitformerError(f"g++ failed on {prj}:\n{res.stderr[-2000:]}")
    return exe, time.perf_counter() - start


def csim(prj: str | Path, *, log=print, count_trips: bool = False) -> dict:
    """Compile and run the testbench; compare every output with the exact path's.

    Args:
        count_trips: also count the iterations of the pipelined loops (QK, EXP, SCALE, AV
            of each attention, COMPUTE of each linear) over all sentences, returned as
            ``trips`` (``{"attention_0.QK": n, ...}``); slower.

    Returns:
        ``{"scope", "sentences", "compile_s", "run_s", "bit_exact", "values",
        "max_abs_diff", "same_class", "accuracy", "reference_accuracy"}`` (a linear
        project: the exact outputs instead of logits; no classes), and ``trips``.

    Raises:
        FitformerError: not a project, a damaged binary (:func:`check_files`), no g++, a
            compile error, a testbench failure. Outputs that are not bit-exact are not an
            error here: the CLI exits with status 1 for them.
    """
    prj, rec = _project(prj)
    check_files(prj, rec)
    exe, compile_s = build(prj, count_trips=count_trips)
    log(f"compiled in {compile_s:.1f} s; running the testbench ...")
    start = time.perf_counter()
    res = subprocess.run([str(exe)], cwd=prj, capture_output=True, text=True)
    run_s = time.perf_counter() - start
    if res.returncode:
        raise FitformerError(f"the testbench of {prj} failed ({res.returncode}):\n"
                             f"{(res.stdout + res.stderr)[-2000:]}")
    m = re.search(r"in ([0-9.]+) s", res.stdout)
    out = {"scope": rec["scope"], "device": rec["device"], "precision": rec["precision"],
           "compile_s": round(compile_s, 2), "run_s": round(float(m.group(1)) if m
                                                              else run_s, 2)}
    if count_trips:
        out["trips"] = {m.group(1): int(m.group(2))
                        for m in re.finditer(r"^trips (\S+) (\d+)$", res.stdout, re.M)}
    if rec["scope"] == "model":
        got = np.fromfile(prj / "tb_data" / "csim_logits.bin", np.float32)
        ref = np.fromfile(prj / "tb_data" / "reference_logits.bin", np.float32)
        labels = np.fromfile(prj / "tb_data" / "labels.bin", np.int32)
        classes = got.size // max(1, labels.size)
        got, ref = got.reshape(-1, classes), ref.reshape(-1, classes)
        out.update(sentences=int(labels.size), values=int(ref.size),
                   bit_exact=int((got.view(np.int32) == ref.view(np.int32)).sum()),
                   max_abs_diff=float(np.abs(got.astype(np.float64) - ref).max()),
                   same_class=int((got.argmax(1) == ref.argmax(1)).sum()),
                   accuracy=float((got.argmax(1) == labels).mean()),
                   reference_accuracy=float((ref.argmax(1) == labels).mean()))
    else:
        got = np.fromfile(prj / "tb_data" / "csim_outputs.bin", np.float64)
        ref = np.fromfile(prj / "tb_data" / "reference_outputs.bin", np.float64)
        lens = np.fromfile(prj / "tb_data" / "lengths.bin", np.int32)
        if got.size != ref.size:
            raise FitformerError(f"the testbench wrote {got.size} outputs, expected "
                                 f"{ref.size}.")
        out.update(sentences=int(lens.size), values=int(ref.size),
                   bit_exact=int((got == ref).sum()),
                   max_abs_diff=float(np.abs(got - ref).max()) if ref.size else 0.0)
    return out
