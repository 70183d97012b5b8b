"""``fitformer hls``: write a Vitis HLS project for a pruned HP run on an FPGA design point.

The project (``PRJ/``):

* ``firmware/`` -- ``parameters.h`` (dimensions, raw types, parameter offsets),
  ``nonlinear.h`` (the exact path's non-linear units of the design: binary32 functions, or
  with ``nonlinear: fx16`` the table units), ``fitformer.h`` / ``fitformer.cpp``
  (one HP sparse-linear function per linear layer with the design's ``P`` PEs, ``T`` token
  lanes and ``B`` banks as literal pragma factors, attention per layer, add & norm, GELU,
  the embedding gather, pooler and classifier; ``fitformer_top`` the top function);
* ``weights/`` -- the HP format (design.md §5) of every linear, unpacked and bank-interleaved
  in the order the PEs read it: ``hp_values.bin`` (int8/int16 codes of each tensor's
  ``ap_fixed<W, I>``), ``hp_offsets.bin`` (uint8 in-bank offsets), ``hp_block_rows.bin``
  (int32), ``bias_codes.bin`` (int64 codes on each accumulator's grid), ``params.bin``
  (float32 embeddings and layer norms);
* ``tb/testbench.cpp`` and ``tb_data/`` -- real dev sentences' token ids and the logits of
  the exact fixed-point path (:func:`fitformer.models.fixed_point.exact_model`), labels;
* ``build_prj.tcl`` -- ``vitis_hls -f build_prj.tcl`` (csim, csynth, cosim);
* ``project.json`` -- what was generated (run, device, design point, per-linear layout and
  loop trip counts).

Layout of one linear of ``S`` stripes on ``P`` PEs (``G = S / P`` stripe groups, PE ``p``
owns stripes ``g P + p``): values and offsets ``[G][K1 r][k][P][B]``, block rows
``[G][K1][P]``, ascending per stripe: the ``B`` weights of one PE's cycle are adjacent
(bank-interleaved), and a PE reads its stripe's row segments in order, row tile by row
tile (design (c): :func:`fitformer.hardware.shared_array.row_tiles`).
Linears that are not pruned (pooler, classifier) are stored in the same format with every
block and weight kept.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np

from fitformer.errors import FitformerError

TEMPLATES = Path(__file__).parent / "templates"
#: The tokens per sentence of a run whose key has no ``max_length`` (design.md §9: 64).
SEQ_MAX = 64


def _env():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                              trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _c_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name)


def _hexf(x) -> str:
    """A binary32 constant as a C float literal that reads back to the same bits (9
    significant digits round-trip any binary32, IEEE 754-2008 5.12.2)."""
    v = np.float32(x)
    text = f"{float(v):.9e}"
    assert np.float32(float(text)) == v
    return text + "f"


def _nonlinear_constants(eps: float) -> dict:
    from fitformer.models import fixed_point as fx

    return {"exp_log2e": _hexf(fx.EXP_LOG2E), "exp_ln2_hi": _hexf(fx.EXP_LN2_HI),
            "exp_ln2_lo": _hexf(fx.EXP_LN2_LO), "exp_min": _hexf(fx.EXP_MIN),
            "erf_p": _hexf(fx.ERF_P), "sqrt2": _hexf(fx.SQRT2),
            "exp_poly": [_hexf(c) for c in fx.EXP_POLY],
            "erf_a": [_hexf(c) for c in fx.ERF_A], "eps": _hexf(eps)}


def _fx16_tables() -> dict:
    """The fx16 table units' tables and parameters (fitformer.models.fixed_point)."""
    from fitformer.models import fixed_point as fp

    return {"exp": [int(v) for v in fp.EXP_FX16_TABLE], "phi": [int(v) for v in fp.PHI_FX16_TABLE],
            "exp_frac": fp.EXP_FX16_FRAC, "exp_seg": fp.EXP_FX16_SEG_BITS,
            "phi_frac": fp.PHI_FX16_FRAC, "phi_seg": fp.PHI_FX16_SEG_BITS,
            "phi_range": fp.PHI_FX16_RANGE, "exp_err": fp.EXP_FX16_MAX_ERROR,
            "phi_err": fp.PHI_FX16_MAX_ERROR}


def read_design(path: str | Path) -> dict:
    """A ``design.json`` (as ``fitformer select`` writes it, or an estimate's JSON): its
    ``precision``, ``design`` (knobs), ``weights_on_chip``, family and non-linear units.

    Raises:
        FitformerError: unreadable, or no FPGA design point in it.
    """
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise FitformerError(f"--design {p}: cannot read it as JSON ({exc}); give the "
                             "design.json that `fitformer select` writes.") from None
    knobs = d.get("design") if isinstance(d, dict) else None
    if not isinstance(knobs, dict) or d.get("precision") not in ("fx16", "fx8"):
        raise FitformerError(f"--design {p} holds no FPGA design point (it needs 'design' "
                             "knobs and a precision fx16 or fx8; a GPU or CPU answer has "
                             "none).")
    for unit, values in knobs.items():
        bad = ([f"{unit} {values!r}"] if not isinstance(values, dict) else
               [f"{unit}.{k} = {v!r}" for k, v in values.items()
                if isinstance(v, bool) or not isinstance(v, int) or v < 1])
        if bad:
            raise FitformerError(f"--design {p}: {bad[0]} is not a positive integer (every "
                                 "knob is a count: P, T, R, H_par, lanes); re-create the file "
                                 "with `fitformer select`.")
    family = d.get("design_family") or d.get("family") or (
        "shared" if "array" in knobs else "per_op")
    return {"precision": d["precision"], "knobs": knobs, "family": family,
            "weights_on_chip": bool(d.get("weights_on_chip", True)),
            "nonlinear": d.get("nonlinear") or "fp32",
            "device": d.get("id") or d.get("device")}


def choose_design(run_dir: Path, device, design_file: str | Path | None, *, seq_len: int,
                  precision: str | None = None):
    """``(estimate, workload)`` of the design to generate: the given ``design.json``
    evaluated on the run's masks, or the DSE's best.

    Raises:
        FitformerError: the design does not fit the device (names the resources over and
            the fix), a ``P`` that does not divide a matrix's stripes, or a non-FPGA device.
    """
    from fitformer.hardware.accelerator import DesignPoint
    from fitformer.hardware.dse import estimate_point, explore, platform_of
    from fitformer.hardware.frontends import workload_from_run

    plat = platform_of(device)
    wl = workload_from_run(run_dir)
    if design_file is not None:
        d = read_design(design_file)
        if d["device"] is not None and d["device"] != device.id:
            raise FitformerError(f"--design {design_file} was made for {d['device']}, not "
                                 f"{device.id}; pass --device {d['device']}, or make a design "
                                 f"for {device.id} with `fitformer select --only "
                                 f"{device.id}` (or omit --design to run the DSE).")
        point = DesignPoint(d["precision"], d["weights_on_chip"], d["knobs"], d["family"],
                            d["nonlinear"])
        try:
            est = estimate_point(wl, point, plat, 1, seq_len)
        except KeyError as exc:
            need = ("array: P, T, R; nonlinear: lanes; add_norm: lanes"
                    if point.family == "shared" else
                    "qkv, attn_out, ffn_in, ffn_out: P, T; attention: H_par, T; add_norm: lanes")
            raise FitformerError(f"--design {design_file} has no knob {exc.args[0]!r} (a "
                                 f"{point.family} design needs {need}); add it, or re-create "
                                 "the design with `fitformer select` for this run.") from None
        except ValueError as exc:
            raise FitformerError(f"--design {design_file} does not fit this model's matrices "
                                 f"({exc}); re-create it with `fitformer select` for this "
                                 "run.") from None
        where = f"--design {design_file}"
    else:
        est = explore(wl, device, precision=precision, seq_len=seq_len)
        where = f"the best design the DSE found for {run_dir.name}"
    used = est.resources.as_dict()
    over = [f"{k} {used[k]:,} > {plat.available[k]:,.0f}" for k in used
            if used[k] > plat.available.get(k, 0) + 1e-9]
    if over:
        raise FitformerError(f"{where} does not fit {device.id}: {'; '.join(over)} available "
                             "after the shell. Choose a larger device, a sparser run, or a "
                             "design that fits (`fitformer estimate --device ... --json`).")
    return est, wl


def _unit_of(role: str, family: str) -> str:
    from fitformer.hardware.accelerator import LINEAR_UNITS

    if family == "shared":
        return "array"
    return next(u for u, roles in LINEAR_UNITS.items() if role in roles)


#: What ``fitformer hls`` writes in its ``--out`` folder (removed before a new project is
#: written, so no file of an earlier project stays beside the new one).
OWNED = ("firmware", "tb", "tb_data", "weights", "build", "build_prj.tcl", "project.json")


#: Keys that mark a ``project.json`` as written by ``fitformer hls`` (the placeholder written
#: first, or the record written last).
PROJECT_KEYS = ("schema_version", "fitformer_version", "scope")


def is_generated_project(out: Path) -> bool:
    """Whether ``out/project.json`` was written by ``fitformer hls`` (complete or
    interrupted): a JSON object with :data:`PROJECT_KEYS`."""
    try:
        rec = json.loads((out / "project.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(rec, dict) and all(k in rec for k in PROJECT_KEYS)


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that ``fitformer hls`` cannot write a project into, before any
    work: a file, a path whose folder cannot be created, a folder holding a file where the
    project has a folder (or the reverse), or a non-empty folder that is not a project
    ``fitformer hls`` wrote (its ``project.json`` is written first, as a placeholder, so an
    interrupted generation is recognised and written again).

    Raises:
        FitformerError: naming the path and the fix.
    """
    if out.exists() and not out.is_dir():
        raise FitformerError(f"--out {out} is a file; give a new or empty folder for the "
                             "project.")
    if not out.exists():
        try:
            out.mkdir(parents=True)
        except OSError as exc:
            raise FitformerError(f"--out {out}: cannot create the folder ({exc.strerror}); "
                                 "give a path in a writable folder.") from None
        out.rmdir()                     # made again when the project is written
        return
    if any(out.iterdir()) and not is_generated_project(out):
        held = sorted(p.name for p in out.iterdir())
        raise FitformerError(f"--out {out} is a folder that is not empty and not a project "
                             f"that `fitformer hls` wrote (it holds {', '.join(held[:3])}"
                             f"{', ...' if len(held) > 3 else ''}; no fitformer "
                             "project.json); give a new or empty folder, or move its "
                             "contents away.")
    for name in OWNED:
        path = out / name
        want_dir = "." not in name
        if path.is_symlink() or (path.exists() and path.is_dir() != want_dir):
            what = "folder" if want_dir else "file"
            raise FitformerError(f"--out {out}: {path} is not the {what} a generated project "
                                 "has there; move it away or give another --out.")


def clear_out(out: Path) -> None:
    """Remove an earlier project's files (:data:`OWNED`) from ``out`` (checked by
    :func:`check_out`)."""
    import shutil

    for name in OWNED:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()


def file_record(out: Path, rel: str) -> dict:
    """``{"bytes", "sha256"}`` of the project file ``out / rel`` (checked by csim)."""
    import hashlib

    data = (out / rel).read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _layout(name: str, lin, mask: np.ndarray, P: int, r: int, c: int, B: int) -> dict:
    """The HP format of one exact linear, reordered for ``P`` PEs (module docstring)."""
    from fitformer.formats.formats import HPFormat

    enc = HPFormat(r, c, B).encode(lin.w_codes.astype(np.float64), mask)
    a = enc.arrays
    S, K1 = a["block_rows"].shape
    k = enc.params["k"]
    if S % P:
        raise FitformerError(f"P = {P} PEs do not divide the {S} stripes of {name}; the "
                             "design is for another model.")
    G = S // P
    segs = K1 * r
    # Block rows ascending in every stripe (a stripe with fewer kept blocks stores unused
    # ones after them): a PE walks the row tiles in order with one cursor per stripe.
    order = np.argsort(a["block_rows"], axis=1, kind="stable")                # (S, K1)
    block_rows = np.take_along_axis(a["block_rows"], order, axis=1)
    seg_order = (order[:, :, None] * r + np.arange(r)).reshape(S, segs)
    values = np.take_along_axis(a["values"].reshape(S, segs, B * k), seg_order[:, :, None], 1)
    offsets = np.take_along_axis(a["offsets"].reshape(S, segs, B * k), seg_order[:, :, None],
                                 1)
    vals = values.reshape(G, P, segs, B, k).transpose(0, 2, 4, 1, 3)     # [G][segs][k][P][B]
    offs = offsets.reshape(G, P, segs, B, k).transpose(0, 2, 4, 1, 3)
    brows = block_rows.reshape(G, P, K1).transpose(0, 2, 1)               # [G][K1][P]
    # A PE's COMPUTE cycles per pass: k per stored row segment, rows past M skipped.
    M = mask.shape[0]
    rows = np.minimum(r, M - block_rows * r).clip(min=0)                    # (S, K1)
    pe_cycles = int(rows.sum(axis=1).reshape(G, P).sum(axis=0).max()) * k if S else 0
    return {"S": S, "K1": K1, "KB": k, "G": G, "SEGS": segs, "compute_trips": pe_cycles,
            "vals": np.ascontiguousarray(vals).astype(np.int64).ravel(),
            "offs": np.ascontiguousarray(offs).astype(np.uint8).ravel(),
            "brows": np.ascontiguousarray(brows).astype(np.int32).ravel()}


def _calibration_and_dev(run_dir: Path, net, tok, n_dev: int):
    """The run's calibration (its first 256 training sentences, as its metrics) and the
    first ``n_dev`` dev sentences (token ids, labels)."""
    from fitformer.data import load_dataset
    from fitformer.models.fixed_point import calibrate
    from fitformer.training.budgets import get_budget
    from fitformer.training.evaluation import calibration_batches
    from fitformer.training.finetune import encode_splits
    from fitformer.training.runs import read_json

    key = read_json(run_dir / "run.json", "re-create the pruned run")
    data = load_dataset(key.get("dataset", "rotten-tomatoes"))
    train, dev, _ = encode_splits(tok, data, get_budget(key.get("budget", "default")),
                                  int(key.get("max_length", SEQ_MAX)))
    import torch

    with torch.no_grad():
        cal = calibrate(net, calibration_batches(train))
    n = min(n_dev, len(dev))
    ids = [list(dev.features[i]["input_ids"]) for i in range(n)]
    return cal, ids, dev.labels[:n].numpy()


def hls_command(pruned: str | Path, device_id: str, out: str | Path, *,
                design: str | Path | None = None, devices_file: str | Path | None = None,
                sentences: int = 200, precision: str | None = None,
                seq_len: int | None = None, linear: str | None = None) -> str:
    """The ``fitformer hls`` command line that writes this project (paths absolute, options
    at their default left out); ``project.json`` records it, so that a hint to write a
    damaged or interrupted project again repeats the options it was made with."""
    import shlex

    def absolute(path) -> str:
        return str(Path(path).expanduser().resolve())

    args = ["fitformer", "hls", "--pruned", absolute(pruned), "--device", device_id,
            "--out", absolute(out)]
    for flag, value in (("--design", design and absolute(design)),
                        ("--devices", devices_file and absolute(devices_file)),
                        ("--precision", precision), ("--seq-len", seq_len),
                        ("--linear", linear)):
        if value is not None:
            args += [flag, str(value)]
    if sentences != 200:
        args += ["--sentences", str(sentences)]
    return shlex.join(args)


def generate(pruned: str | Path, device_id: str, out: str | Path, *,
             design: str | Path | None = None, devices_file: str | Path | None = None,
             sentences: int = 200, precision: str | None = None, seq_len: int | None = None,
             linear: str | None = None, encoder_layers: int | None = None,
             log=print) -> dict:
    """Write the Vitis HLS project of a pruned HP run on an FPGA (module docstring).

    Args:
        pruned: a run directory of ``fitformer prune --pattern hp``.
        device_id: an FPGA of the catalog (or of ``devices_file``).
        out: the project folder (created; existing generated files are overwritten).
        design: a ``design.json``; ``None`` runs the DSE (batch 1, ``seq_len`` tokens).
        seq_len: tokens per sequence the design is sized and estimated for, and the
            project's ``SEQ_MAX`` (its buffers); ``None``: the run's ``max_length`` (the
            length its accuracy was measured at, design.md §9). At least that length, so
            that the testbench's dev sentences fit.
        sentences: real dev sentences in the testbench (with their exact-path logits).
        precision: pin ``fx16``/``fx8`` for the DSE (a ``design`` fixes its own).
        linear: generate only this linear layer (module name, e.g.
            ``bert.encoder.layer.0.attention.self.query``): the testbench feeds it the
            exact path's real inputs of those sentences and checks its exact outputs.
        encoder_layers: run only the first encoder layers (then pooler and classifier), for
            benchmarks; ``None`` runs all.

    Returns:
        the ``project.json`` record.

    Raises:
        FitformerError: not an HP run, not an FPGA, a design that does not fit, an
            unknown ``linear``, a ``seq_len`` below the run's ``max_length``.
    """
    import torch

    from fitformer import __version__
    from fitformer.formats.export import load_pruned_run
    from fitformer.hardware.catalog import load_catalog
    from fitformer.hardware.shared_array import row_tiles
    from fitformer.models.fixed_point import exact_model
    from fitformer.models.layers import layer_index, role_of
    from fitformer.models.loading import load_tokenizer, resolve_model

    started = time.perf_counter()
    command = hls_command(pruned, device_id, out, design=design, devices_file=devices_file,
                          sentences=sentences, precision=precision, seq_len=seq_len,
                          linear=linear)
    run_dir = Path(pruned)
    net, masks, pruning = load_pruned_run(run_dir)
    if pruning.get("pattern") != "hp":
        raise FitformerError(f"--pruned {run_dir} was pruned with {pruning.get('pattern')!r}; "
                             "the generated accelerator reads the HP format (prune with "
                             "`--pattern hp`).")
    # Names and layer count checked before the calibration and the DSE (minutes).
    linear_names = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)]
    if linear is not None and linear not in linear_names:
        raise FitformerError(f"--linear {linear}: no such linear layer; choose one of "
                             f"{', '.join(linear_names[:3])}, ... (`fitformer model show`).")
    n_hidden = int(getattr(net.config, "num_hidden_layers", 0) or 0)
    if encoder_layers is not None and n_hidden and not 1 <= encoder_layers <= n_hidden:
        raise FitformerError(f"--encoder-layers {encoder_layers}: the model has {n_hidden}.")
    out = Path(out)
    check_out(out)
    device = next(iter(load_catalog(devices_file, [device_id], flag="--device")))
    if device.kind != "fpga":
        fpgas = [d.id for d in load_catalog(devices_file, include_host=False)
                 if d.kind == "fpga"]
        raise FitformerError(f"--device {device.id} is a {device.kind}; `fitformer hls` "
                             f"generates an FPGA project: choose one of {', '.join(fpgas)}.")
    from fitformer.training.runs import read_json

    max_length = int(read_json(run_dir / "run.json", "re-create the pruned run")
                     .get("max_length", SEQ_MAX))
    if seq_len is None:
        seq_len = max_length
    elif seq_len < max_length:
        raise FitformerError(f"--seq-len {seq_len}: the testbench runs the run's dev "
                             f"sentences of up to {max_length} tokens (its max_length); "
                             f"pass --seq-len {max_length} or more.")
    est, wl = choose_design(run_dir, device, design, seq_len=seq_len, precision=precision)
    point = est.design
    width = 16 if point.precision == "fx16" else 8
    cfg = net.config
    if getattr(cfg, "model_type", "") != "bert":
        raise FitformerError(f"--pruned {run_dir} is a {cfg.model_type!r} model; HLS "
                             "generation supports BERT-style encoder classifiers.")
    net.eval()
    tok = load_tokenizer(resolve_model(str(run_dir)))
    log(f"calibrating and reading {sentences} dev sentences ...")
    cal, ids, labels = _calibration_and_dev(run_dir, net, tok, sentences)
    if len(ids) < sentences:
        log(f"the run's dev split has {len(ids)} sentences: the testbench uses all of them "
            f"(--sentences {sentences} asked for more).")
    ex = exact_model(net, point.precision, cal, point.nonlinear)
    r, c = wl.block
    B = wl.banks
    n_layers = ex.layers if encoder_layers is None else encoder_layers
    if not 1 <= n_layers <= ex.layers:
        raise FitformerError(f"--encoder-layers {encoder_layers}: the model has {ex.layers}.")
    names = [n for n in ex.linears
             if layer_index(n) is None or layer_index(n) < n_layers]
    clear_out(out)
    out.mkdir(parents=True, exist_ok=True)
    # Written first, so that an interrupted generation is recognised as ours (check_out) and
    # csim refuses it; the complete record replaces it at the end.
    (out / "project.json").write_text(json.dumps({
        "schema_version": 1, "fitformer_version": __version__, "scope": None,
        "complete": False, "command": command,
        "note": "generation interrupted: run the command again"}) + "\n")
    for sub in ("firmware", "tb", "tb_data", "weights"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    linears, vals, offs, brows, bias = {}, [], [], [], []
    counts = {"vals": 0, "brows": 0, "bias": 0}
    for name in ([linear] if linear else names):
        lin = ex.linears[name]
        role = role_of(name)
        knobs = point.knobs[_unit_of(role, point.family)]
        P, T = int(knobs["P"]), int(knobs["T"])
        mask = masks[name].numpy() if name in masks else np.ones(lin.w_codes.shape, bool)
        lay = _layout(name, lin, mask, P, r, c, B)
        M, N = lin.w_codes.shape
        # Row tiles of the shared array's R (design (c)); the per-operation units are untiled.
        RT, tile_rows = row_tiles(M, int(knobs.get("R", M)), r)
        rec = {"name": name, "role": role, "layer": layer_index(name), "fn": "lin_" +
               _c_name(name), "M": M, "N": N, "P": P, "T": T, "RT": RT,
               "NT": len(tile_rows),
               "S": lay["S"], "K1": lay["K1"], "KB": lay["KB"], "G": lay["G"],
               "SEGS": lay["SEGS"], "compute_trips": lay["compute_trips"],
               "x_t": lin.x_type.cpp(), "w_t": lin.w_type.cpp(), "acc_t":
               lin.acc_type.cpp(), "acc_w": lin.acc_type.width,
               "vals_off": counts["vals"], "brows_off": counts["brows"],
               "bias_off": counts["bias"],
               # per-operation family: GELU in ffn_in's reduce pipeline (as rows drain)
               "gelu": role == "ffn_in" and point.family != "shared" and not linear,
               # shared array: residual add and layer-norm statistics in the MERGE drain
               "residual": role in ("attn_out", "ffn_out") and point.family == "shared"
               and not linear}
        vals.append(lay["vals"])
        offs.append(lay["offs"])
        brows.append(lay["brows"])
        bias.append(lin.b_codes.astype(np.int64))
        counts["vals"] += lay["vals"].size
        counts["brows"] += lay["brows"].size
        counts["bias"] += M
        linears[name] = rec
    raw = np.int8 if width == 8 else np.int16
    np.concatenate(vals).astype(raw).tofile(out / "weights" / "hp_values.bin")
    np.concatenate(offs).tofile(out / "weights" / "hp_offsets.bin")
    np.concatenate(brows).tofile(out / "weights" / "hp_block_rows.bin")
    np.concatenate(bias).tofile(out / "weights" / "bias_codes.bin")

    prefix = ex.prefix
    param_offsets: list[tuple[str, int]] = []
    scope = "linear" if linear else "model"
    attentions = []
    if scope == "model":
        params, off = [], 0
        special = {f"{prefix}.embeddings.word_embeddings.weight": "word",
                   f"{prefix}.embeddings.position_embeddings.weight": "position",
                   f"{prefix}.embeddings.token_type_embeddings.weight": "token_type"}
        for key, arr in ex.tensors.items():
            param_offsets.append((special.get(key, _c_name(key)), off))
            params.append(arr.astype(np.float32).ravel())
            off += arr.size
        np.concatenate(params).tofile(out / "weights" / "params.bin")
        dh = cfg.hidden_size // cfg.num_attention_heads
        if point.family == "shared":    # attention on the array, softmax on the NL lanes
            arr = point.knobs["array"]
            att_knobs = {"P": int(arr["P"]), "T": int(arr["T"]), "H_par": 1,
                         "NL": int(point.knobs["nonlinear"]["lanes"]),
                         "CQ": math.ceil(dh / c)}
        else:
            att = point.knobs["attention"]
            att_knobs = {"H_par": int(att["H_par"]), "T": int(att["T"])}
        for i in range(n_layers):
            a = ex.attention_name(i)
            p = f"{prefix}.encoder.layer.{i}"
            t = {w: ex.attn_types[f"{a}.{w}"] for w in ("q", "k", "v", "probs")}
            ctx_t = ex.linears[f"{p}.attention.output.dense"].x_type
            s_acc = _acc(t["q"], t["k"], dh)
            o_acc = _acc(t["probs"], t["v"], seq_len)
            by_role = {linears[n]["role"]: linears[n] for n in linears
                       if linears[n]["layer"] == i}
            attentions.append({
                "layer": i, "q_t": t["q"].cpp(), "k_t": t["k"].cpp(), "v_t": t["v"].cpp(),
                "p_t": t["probs"].cpp(), "ctx_t": ctx_t.cpp(), "s_acc_t": s_acc,
                "o_acc_t": o_acc, "scale": _hexf(np.float32(dh ** -0.5)),
                **att_knobs, "lin": by_role,
                "ln1": _c_name(f"{p}.attention.output.LayerNorm"),
                "ln2": _c_name(f"{p}.output.LayerNorm")})
        # Token ids of the testbench: n, then (len, ids...) per sentence.
        flat = [len(ids)]
        for s in ids:
            flat += [len(s), *s]
        np.asarray(flat, np.int32).tofile(out / "tb_data" / "input_ids.bin")
        log(f"exact fixed-point logits of {len(ids)} sentences ...")
        ref = np.stack([ex.logits(np.asarray(s), n_layers) for s in ids]).astype(np.float32)
        ref.tofile(out / "tb_data" / "reference_logits.bin")
        np.asarray(labels, np.int32).tofile(out / "tb_data" / "labels.bin")
    else:
        xs, ys = _linear_io(ex, linear, ids)
        np.asarray([len(x) for x in xs], np.int32).tofile(out / "tb_data" / "lengths.bin")
        np.concatenate(xs).astype(np.float32).tofile(out / "tb_data" / "linear_inputs.bin")
        np.concatenate(ys).astype(np.float64).tofile(out / "tb_data" / "reference_outputs.bin")

    # Element counts of the binaries the testbench reads: it refuses a file of another size
    # (a truncated or swapped file would otherwise be read past its end).
    item = {"weights/hp_values.bin": width // 8, "weights/hp_offsets.bin": 1,
            "weights/hp_block_rows.bin": 4, "weights/bias_codes.bin": 8,
            "weights/params.bin": 4, "tb_data/input_ids.bin": 4, "tb_data/lengths.bin": 4,
            "tb_data/linear_inputs.bin": 4}
    expect = {rel: (out / rel).stat().st_size // size for rel, size in item.items()
              if (out / rel).is_file()}
    env = _env()
    ctx = {"expect": expect, "version": __version__, "run": str(run_dir), "device": device.id,
           "part": device.num("part") or "unknown", "family": point.family,
           "precision": point.precision, "width": width, "seq_max": seq_len,
           "hidden": cfg.hidden_size, "heads": cfg.num_attention_heads,
           "head_dim": cfg.hidden_size // cfg.num_attention_heads,
           "inter": cfg.intermediate_size, "layers": n_layers,
           "classes": int(cfg.num_labels), "r": r, "c": c, "B": B, "bw": c // B,
           "param_offsets": param_offsets, "c_const": None, "scope": scope,
           "scope_text": (f"The classifier with {n_layers} of {ex.layers} encoder layers."
                          if scope == "model" else f"One linear layer: {linear}."),
           "linears": list(linears.values()), "attentions": attentions,
           "clock_ns": round(1e3 / est.clock_mhz, 3),
           "nl_lanes": int(point.knobs.get("nonlinear", {}).get("lanes", 1)),
           "tanh_lanes": int(point.knobs["nonlinear"]["lanes"] if point.family == "shared"
                             else point.knobs["add_norm"]["lanes"]),
           "norm_lanes": int(point.knobs["add_norm"]["lanes"]),
           "emb_ln": _c_name(f"{prefix}.embeddings.LayerNorm"),
           "pooler": linears.get(f"{prefix}.pooler.dense"),
           "classifier": linears.get("classifier")}
    files = {"firmware/parameters.h": "parameters.h.j2",
             "firmware/fitformer.h": "fitformer.h.j2",
             "firmware/fitformer.cpp": "fitformer.cpp.j2",
             "tb/testbench.cpp": "testbench.cpp.j2", "build_prj.tcl": "build_prj.tcl.j2"}
    for dest, tpl in files.items():
        (out / dest).write_text(env.get_template(tpl).render(**ctx))
    (out / "firmware" / "nonlinear.h").write_text(env.get_template("nonlinear.h.j2").render(
        version=__version__, c=_nonlinear_constants(ex.eps), fx16=ex.fx16_units,
        t=_fx16_tables()))
    record = {"schema_version": 1, "fitformer_version": __version__, "complete": True,
              "command": command, "run": str(run_dir),
              "device": device.id, "part": ctx["part"], "scope": scope, "linear": linear,
              "encoder_layers": n_layers if scope == "model" else None,
              "design": point.as_json(), "clock_mhz": est.clock_mhz, "seq_len": seq_len,
              "latency_ms_model": est.compute_ms, "precision": point.precision,
              "block": [r, c], "banks": B, "sentences": len(ids),
              "linears": {n: {k: v for k, v in rec.items() if k != "fn"}
                          for n, rec in linears.items()},
              "generate_s": round(time.perf_counter() - started, 1),
              "files": {str(f.relative_to(out)): file_record(out, str(f.relative_to(out)))
                        for f in sorted(out.rglob("*")) if f.is_file()}}
    (out / "project.json").write_text(json.dumps(record, indent=2) + "\n")
    del torch
    return record


def _acc(a, b, n: int) -> str:
    from fitformer.models.fixed_point import accumulator_type

    return accumulator_type(a, b, n).cpp()


def _linear_io(ex, name: str, ids: list[list[int]]):
    """Real inputs (float32 ``(L, N)``) of linear ``name`` in the exact path for each
    sentence, and its exact outputs (float64 ``(L, M)``)."""
    lin = ex.linears[name]
    xs, ys = [], []

    class _Tap:
        def __call__(self, x):
            y = lin(x)
            xs.append(np.asarray(x, np.float32))
            ys.append(y)
            return y

    ex.linears[name] = _Tap()
    try:
        for s in ids:
            ex.logits(np.asarray(s))
    finally:
        ex.linears[name] = lin
    return xs, ys
