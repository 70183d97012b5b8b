"""fitformer hls / csim (issue 19): generated C++ against the exact fixed-point path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fitformer.errors import FitformerError

QUERY = "bert.encoder.layer.0.attention.self.query"


@pytest.fixture
def linear_project(tiny_hp_run, tmp_path):
    from fitformer.hls import generate

    _, hp = tiny_hp_run
    prj = tmp_path / "prj"
    rec = generate(hp.path, "zcu104", prj, sentences=3, linear=QUERY, log=lambda m: None)
    return prj, rec


def test_one_pruned_linear_is_bit_exact(linear_project):
    from fitformer.hls import csim, syntax_check

    prj, rec = linear_project
    assert syntax_check(prj) == []                       # -Wall clean
    res = csim(prj, log=lambda m: None)
    lens = np.fromfile(prj / "tb_data" / "lengths.bin", np.int32)
    assert res["sentences"] == 3 and res["values"] == int(lens.sum()) * 384
    assert res["bit_exact"] == res["values"] and res["max_abs_diff"] == 0.0
    # The reference is the exact path's integer arithmetic: every output on the grid.
    ref = np.fromfile(prj / "tb_data" / "reference_outputs.bin", np.float64)
    frac = int(re.match(r"ap_fixed<(\d+), (-?\d+)", rec["linears"][QUERY]["acc_t"]).group(1)
               ) - int(re.match(r"ap_fixed<(\d+), (-?\d+)",
                                rec["linears"][QUERY]["acc_t"]).group(2))
    assert np.array_equal(ref * 2.0 ** frac, np.round(ref * 2.0 ** frac))


def test_pragma_factors_are_the_design_points(linear_project):
    prj, rec = linear_project
    knobs = rec["design"]["knobs"]
    unit = "array" if rec["design"]["family"] == "shared" else "qkv"
    P, T, B = knobs[unit]["P"], knobs[unit]["T"], rec["banks"]
    src = (prj / "firmware" / "fitformer.cpp").read_text()
    lin = rec["linears"][QUERY]
    from fitformer.hardware.shared_array import row_tiles

    # Row tiles of the design's R (design (c)): two RT x T partial-sum tiles per PE.
    R = knobs[unit].get("R", 384)
    assert (lin["RT"], lin["NT"]) == (row_tiles(384, R, 16)[0], len(row_tiles(384, R, 16)[1]))
    assert re.search(rf"static ap_fixed<[^>]*> ps\[{P}\]\[{T}\]\[{lin['RT']}\];", src)
    assert f"x_t xs[{T}][16];" in src
    assert re.findall(r"variable=xs type=block factor=(\d+) dim=2", src) == [str(B)]
    assert f"for (int p = 0; p < {P}; p++)" in src and f"for (int t = 0; t < {T}; t++)" in src
    assert f"for (int b = 0; b < {B}; b++)" in src
    assert f"for (int i = 0; i < {lin['NT']}; i++)" in src
    assert src.count("#pragma HLS PIPELINE II=1") == 3       # LOAD, COMPUTE, MERGE
    assert src.count("#pragma HLS DATAFLOW") == 1            # the tile loop's PEs and MERGE
    # A PE's COMPUTE loop runs r k cycles per kept block: over a pass, the analytical
    # model's PE cycles.
    assert lin["compute_trips"] == lin["S"] // P * lin["K1"] * 16 * lin["KB"]
    assert f"g < {lin['G']}; g++" in src and f"e < nrows * {lin['KB']}; e++" in src
    assert lin["G"] * lin["KB"] * lin["SEGS"] == lin["compute_trips"]
    from fitformer.hardware.accelerator import _pe_cycles
    from fitformer.hardware.frontends import workload_from_run

    m = workload_from_run(rec["run"]).matrix("q", 0)
    assert _pe_cycles(m, P) == lin["compute_trips"]     # the model's PE cycles per pass
    tcl = (prj / "build_prj.tcl").read_text()
    assert "set_part xczu7ev-ffvc1156-2-e" in tcl and "csynth_design" in tcl
    # The design is sized for the run's max_length, the length of the project's buffers.
    max_length = json.loads((Path(rec["run"]) / "run.json").read_text())["max_length"]
    assert rec["seq_len"] == max_length
    assert f"static const int SEQ_MAX = {max_length};" in \
        (prj / "firmware" / "parameters.h").read_text()


def test_design_that_does_not_fit_is_refused(tiny_hp_run, tmp_path):
    from fitformer.hls import generate

    _, hp = tiny_hp_run
    design = tmp_path / "design.json"
    design.write_text(json.dumps({
        "precision": "fx16", "weights_on_chip": True,
        "design": {"array": {"P": 24, "T": 64, "R": 64}, "nonlinear": {"lanes": 64},
                   "add_norm": {"lanes": 64}}}))
    with pytest.raises(FitformerError, match=r"does not fit pynq-z2: .*dsp"):
        generate(hp.path, "pynq-z2", tmp_path / "prj", design=design, log=lambda m: None)
    with pytest.raises(FitformerError, match="holds no FPGA design point"):
        design.write_text(json.dumps({"precision": "fp32", "design": None}))
        generate(hp.path, "zcu104", tmp_path / "prj", design=design, log=lambda m: None)
    design.write_text("[1, 2]")
    with pytest.raises(FitformerError, match="holds no FPGA design point"):
        generate(hp.path, "zcu104", tmp_path / "prj", design=design, log=lambda m: None)
    for bad in ({"P": 0, "T": 4, "R": 16}, {"P": 2, "T": -32, "R": 16},
                {"P": 2, "T": 4.5, "R": 16}):
        design.write_text(json.dumps({"precision": "fx16", "design": {
            "array": bad, "nonlinear": {"lanes": 4}, "add_norm": {"lanes": 4}}}))
        with pytest.raises(FitformerError, match=r"array\.\w+ = .* is not a positive integer"):
            generate(hp.path, "zcu104", tmp_path / "prj", design=design, log=lambda m: None)
    assert not (tmp_path / "prj").exists()


def test_csim_project_paths_and_corrupt_json(tmp_path, monkeypatch):
    """A relative project path resolves (g++ runs inside the project); a corrupt
    project.json is a clear error, not a traceback."""
    from fitformer.errors import FitformerError
    from fitformer.hls.csim import _project

    prj = tmp_path / "prj"
    prj.mkdir()
    (prj / "project.json").write_text('{"scope": "linear", "files": {}}')
    monkeypatch.chdir(tmp_path)
    path, rec = _project("prj")
    assert path == prj.resolve() and path.is_absolute() and rec["scope"] == "linear"
    (prj / "project.json").write_text("{")
    with pytest.raises(FitformerError, match="not valid JSON"):
        _project("prj")
    # the placeholder of an interrupted generation, and someone else's project.json
    for text in ('{"schema_version": 1, "fitformer_version": "0", "scope": null, '
                 '"complete": false}', '{"name": "my-app"}', "[1, 2]"):
        (prj / "project.json").write_text(text)
        with pytest.raises(FitformerError, match="incomplete project .* run the `fitformer "
                                                 "hls` command"):
            _project("prj")
    (prj / "project.json").write_text(json.dumps({"complete": False,
                                                  "command": "fitformer hls --linear x"}))
    with pytest.raises(FitformerError, match="run `fitformer hls --linear x` again"):
        _project("prj")


def test_the_write_again_hint_names_the_checked_folder(tmp_path):
    """A copied project's hint writes into the copy, not the folder it was made in; a
    project without a recorded command keeps its linear and sentence count."""
    from fitformer.hls.csim import _write_again

    rec = {"command": "fitformer hls --pruned /r/run --device zcu104 --out /a/prj --linear "
                      "q --sentences 3", "run": "/r/run", "device": "zcu104"}
    copy = tmp_path / "copy of prj"
    assert _write_again(copy, rec) == ("fitformer hls --pruned /r/run --device zcu104 --out "
                                       f"'{copy}' --linear q --sentences 3")
    legacy = {"run": "/r/run", "device": "zcu104", "linear": "q", "sentences": 3}
    assert _write_again(copy, legacy) == ("fitformer hls --pruned /r/run --device zcu104 "
                                          f"--out '{copy}' --linear q --sentences 3")
    assert _write_again(copy, {"run": "/r/run", "device": "u50", "sentences": 200}) == \
        f"fitformer hls --pruned /r/run --device u50 --out '{copy}'"


def test_damaged_binaries_are_refused_by_csim_and_by_the_testbench(linear_project):
    """A truncated weights file is a clear error (csim checks project.json's sizes and
    SHA-256 before compiling) and the testbench alone refuses it too (exit status 3),
    instead of reading past the end."""
    import subprocess

    from fitformer.hls import csim
    from fitformer.hls.csim import build

    prj, rec = linear_project
    # The hint repeats the options the project was made with (here --linear, --sentences).
    hp = rec["run"]
    assert rec["command"] == (f"fitformer hls --pruned {Path(hp).resolve()} --device zcu104 "
                              f"--out {prj.resolve()} --linear {QUERY} --sentences 3")
    vals = prj / "weights" / "hp_values.bin"
    size = vals.stat().st_size
    assert rec["files"]["weights/hp_values.bin"]["bytes"] == size
    data = vals.read_bytes()
    vals.write_bytes(data[: size // 2])
    with pytest.raises(FitformerError, match=rf"hp_values.bin holds {size // 2:,} bytes, "
                                             rf"project.json says {size:,}.*generate it again"
                                             rf" with `{re.escape(rec['command'])}`\."):
        csim(prj, log=lambda m: None)
    exe, _ = build(prj)
    res = subprocess.run([str(exe)], cwd=prj, capture_output=True, text=True)
    assert res.returncode == 3 and f"holds {size // 2} bytes" in res.stderr
    vals.write_bytes(bytes([data[0] ^ 1]) + data[1:])     # same size, one bit flipped
    with pytest.raises(FitformerError, match="differs from the file fitformer hls wrote"):
        csim(prj, log=lambda m: None)


def test_out_folder_checks_and_stale_files(tiny_hp_run, linear_project, tmp_path):
    from fitformer.hls import generate

    _, hp = tiny_hp_run
    prj, _ = linear_project
    quiet = {"sentences": 1, "linear": QUERY, "log": lambda m: None}
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(FitformerError, match="is a file; give a new or empty folder"):
        generate(hp.path, "zcu104", a_file, **quiet)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FitformerError, match="not empty and not a project that `fitformer "
                                             "hls` wrote"):
        generate(hp.path, "zcu104", other, **quiet)
    assert (other / "notes.txt").read_text() == "mine"
    # Folders named as the project's, or a project.json of another tool, are not ours.
    (other / "notes.txt").unlink()
    (other / "build").mkdir()
    (other / "build" / "thesis.pdf").write_text("mine")
    with pytest.raises(FitformerError, match="it holds build; no fitformer project.json"):
        generate(hp.path, "zcu104", other, **quiet)
    (other / "project.json").write_text('{"name": "my-app"}')
    with pytest.raises(FitformerError, match="not a project that `fitformer hls` wrote"):
        generate(hp.path, "zcu104", other, **quiet)
    assert (other / "build" / "thesis.pdf").read_text() == "mine"
    with pytest.raises(FitformerError, match="cannot create the folder"):
        generate(hp.path, "zcu104", a_file / "sub", **quiet)
    # A reused project: files of the earlier project are removed, the user's are kept.
    (prj / "weights" / "stale.bin").write_bytes(b"old")
    (prj / "README.mine").write_text("kept")
    rec = generate(hp.path, "zcu104", prj, **quiet)
    assert not (prj / "weights" / "stale.bin").exists()
    assert (prj / "README.mine").read_text() == "kept"
    assert rec["sentences"] == 1 and "weights/stale.bin" not in rec["files"]
    # An interrupted generation (the placeholder project.json written first, half the
    # files) is written again by the same command, as the Ctrl-C message says.
    cut = tmp_path / "cut"
    (cut / "weights").mkdir(parents=True)
    (cut / "weights" / "hp_values.bin").write_bytes(b"half")
    (cut / "project.json").write_text(json.dumps({"schema_version": 1, "scope": None,
                                                  "fitformer_version": "0",
                                                  "complete": False}))
    rec = generate(hp.path, "zcu104", cut, **quiet)
    assert rec["complete"] and rec["files"]["weights/hp_values.bin"]["bytes"] > 4
    assert json.loads((cut / "project.json").read_text())["complete"] is True


def test_design_for_another_device_and_a_cpu_are_refused(tiny_hp_run, tmp_path):
    from fitformer.hls import generate

    _, hp = tiny_hp_run
    design = tmp_path / "design.json"
    design.write_text(json.dumps({
        "id": "u200", "precision": "fx16", "weights_on_chip": True,
        "design": {"array": {"P": 2, "T": 4, "R": 16}, "nonlinear": {"lanes": 4},
                   "add_norm": {"lanes": 4}}}))
    with pytest.raises(FitformerError, match="was made for u200, not zcu104; pass --device "
                                             "u200"):
        generate(hp.path, "zcu104", tmp_path / "prj", design=design, log=lambda m: None)
    with pytest.raises(FitformerError, match=r"host-cpu is a cpu; .*choose one of .*zcu104"):
        generate(hp.path, "host-cpu", tmp_path / "prj", log=lambda m: None)
    with pytest.raises(FitformerError, match=r"--seq-len 8: .* up to \d+ tokens .* pass "
                                             r"--seq-len \d+ or more"):
        generate(hp.path, "zcu104", tmp_path / "prj", seq_len=8, log=lambda m: None)
    assert not (tmp_path / "prj").exists()              # refused before writing anything


def test_csim_cli_exits_1_when_not_bit_exact(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import fitformer.hls
    from fitformer.cli import app

    res = {"scope": "linear", "device": "zcu104", "precision": "fx16", "compile_s": 1.0,
           "run_s": 1.0, "sentences": 2, "values": 10, "bit_exact": 9, "max_abs_diff": 0.5}
    monkeypatch.setattr(fitformer.hls, "csim", lambda prj, log: dict(res))
    out = CliRunner().invoke(app, ["csim", str(tmp_path)])
    assert out.exit_code == 1 and "9/10 values bit-exact" in out.output
    assert "1 of 10 values differ" in out.output
    res["bit_exact"] = 10
    assert CliRunner().invoke(app, ["csim", str(tmp_path)]).exit_code == 0


@pytest.mark.parametrize("family,nonlinear", [("shared", "fp32"), ("per_op", "fp32"),
                                              ("shared", "fx16")])
def test_attention_loops_run_the_models_cycle_terms_bit_exact(tiny_hp_run, tmp_path, family,
                                                              nonlinear):
    """One encoder layer of the tiny real model, 2 dev sentences, T = 4 token lanes (so a
    sentence takes several passes): csim is bit-exact with the exact path, and the counted
    iterations of the pipelined loops equal the analytical model's terms: QK + AV and EXP +
    SCALE of the shared array (attention_terms), 4 kv ceil(q / T) per head round of the
    per-operation unit (attention_loop_cycles), the layer norms' STATS and NORM passes
    (norm_cycles, _norm_cycles), and per PE and row tile COMPUTE = passes x the model's
    tile work w[p][i] of every linear, MERGE = passes x its rows. With
    ``nonlinear`` fx16 the table units (exp, Phi, reciprocals) are generated and bit-exact
    too."""
    from fitformer.hardware.accelerator import LINEAR_UNITS, attention_loop_cycles, norm_cycles
    from fitformer.hardware.frontends import workload_from_run
    from fitformer.hardware.shared_array import (
        _norm_cycles,
        attention_terms,
        nonlinear_latency,
        row_tiles,
        tile_work,
    )
    from fitformer.hls import csim, generate, syntax_check

    _, hp = tiny_hp_run
    if family == "shared":
        knobs = {"array": {"P": 2, "T": 4, "R": 16}, "nonlinear": {"lanes": 8},
                 "add_norm": {"lanes": 4}}
    else:
        knobs = {**{u: {"P": 2, "T": 4} for u in LINEAR_UNITS},
                 "attention": {"H_par": 5, "T": 4}, "add_norm": {"lanes": 4}}
    design = tmp_path / "design.json"
    design.write_text(json.dumps({"precision": "fx16", "weights_on_chip": True,
                                  "design": knobs, "family": family,
                                  "nonlinear": nonlinear}))
    prj = tmp_path / "prj"
    rec = generate(hp.path, "u250", prj, design=design, sentences=2, encoder_layers=1,
                   log=lambda m: None)
    assert rec["design"]["family"] == family and rec["design"]["nonlinear"] == nonlinear
    units = (prj / "firmware" / "nonlinear.h").read_text()
    assert ("EXP_TABLE[1026]" in units) == (nonlinear == "fx16")
    assert syntax_check(prj) == []                       # -Wall clean
    res = csim(prj, log=lambda m: None, count_trips=True)
    assert res["bit_exact"] == res["values"] == 4 and res["same_class"] == 2
    tb = np.fromfile(prj / "tb_data" / "input_ids.bin", np.int32)
    lens, pos = [], 1
    for _ in range(int(tb[0])):
        lens.append(int(tb[pos]))
        pos += 1 + int(tb[pos])
    assert min(lens) > 4                                  # several passes of T = 4
    trips = res["trips"]
    if family == "shared":
        wl = workload_from_run(hp.path)
        terms = [attention_terms(n, n, knobs["array"], 8, wl) for n in lens]
        assert trips["attention_0.QK"] == sum(t["qk"] for t in terms)
        assert trips["attention_0.AV"] == sum(t["av"] for t in terms)
        assert trips["attention_0.EXP"] + trips["attention_0.SCALE"] == \
            sum(t["softmax"] for t in terms)
        # GELU on the 8 non-linear lanes as ffn_in drains, tanh of the pooler on them too.
        assert trips["layer_0.GELU"] == sum(-(-n * 1536 // 8) for n in lens)
        assert trips["pooler.TANH"] == len(lens) * (384 // 8)
        # Layer norm on the 4 add & norm lanes: the two norms of the layer take the
        # statistics in attn_out's and ffn_out's MERGE, so only NORM remains (the model's
        # one pass); the embedding's norm runs STATS and NORM (the model's two passes).
        one_pass = [_norm_cycles(4, 384, n, "fp32") - 3 * nonlinear_latency("fp32")
                    for n in lens]
        two_pass = [norm_cycles(4, 384, n) - 3 * nonlinear_latency("fp32") for n in lens]
        assert trips["add_norm.NORM"] + trips["add_norm.STATS"] == \
            2 * sum(one_pass) + sum(two_pass)
        assert trips["add_norm.STATS"] == sum(two_pass) // 2
    else:
        rounds = -(-12 // 5)                              # 12 heads, 5 at a time
        loops = sum(trips[f"attention_0.{x}"] for x in ("QK", "EXP", "SCALE", "AV"))
        assert loops == sum(rounds * attention_loop_cycles(n, n, 4) for n in lens)
        assert "layer_0.GELU" not in trips                # in ffn_in's reduce pipeline
        assert trips["pooler.TANH"] == len(lens) * (384 // 4)   # the add & norm lanes
        # Layer norm: STATS and NORM, the model's two passes, for the embedding and the
        # layer's two norms.
        two_pass = [norm_cycles(4, 384, n) - 3 * nonlinear_latency("fp32") for n in lens]
        assert trips["add_norm.STATS"] + trips["add_norm.NORM"] == 3 * sum(two_pass)
        assert trips["add_norm.STATS"] == trips["add_norm.NORM"]
    wl = workload_from_run(hp.path)
    for name, lin in rec["linears"].items():
        tokens = [1] * len(lens) if lin["layer"] is None else lens   # pooler, classifier: 1
        passes = sum(-(-t // 4) for t in tokens)
        fn = "lin_" + re.sub(r"[^A-Za-z0-9]", "_", name)
        # Every PE's COMPUTE in every row tile runs the model's w[p][i] (tile_work; the
        # shared array tiles rows by R = 16, the per-operation units do not tile), and
        # MERGE drains the model's rows per tile.
        m = next(x for x in wl.matrices if x.role == lin["role"] and x.layer == lin["layer"])
        M = m.shape[0]
        R = knobs["array"]["R"] if family == "shared" else M
        w = tile_work(m, 2, R, 16)
        _, rows = row_tiles(M, R, 16)
        assert (lin["NT"], w.shape) == (len(rows), (2, len(rows)))
        assert lin["NT"] == (-(-M // 16) if family == "shared" else 1)
        for p in range(2):
            for i in range(lin["NT"]):
                assert trips.get(f"{fn}.COMPUTE.{p}.{i}", 0) == passes * w[p, i], (name, p, i)
        assert trips[f"{fn}.COMPUTE"] == passes * 2 * lin["compute_trips"] == passes * w.sum()
        assert trips[f"{fn}.MERGE"] == passes * sum(rows) == passes * M


def test_unknown_linear_and_layer_count_are_refused_before_calibration(tiny_hp_run, tmp_path,
                                                                       monkeypatch):
    """A bad --linear or --encoder-layers is named before the calibration (minutes on a
    real run) and before --out is touched."""
    import fitformer.hls.project as project
    from fitformer.hls import generate

    def never(*a, **k):
        raise AssertionError("calibration reached")

    monkeypatch.setattr(project, "_calibration_and_dev", never)
    _, hp = tiny_hp_run
    with pytest.raises(FitformerError, match="--linear nope: no such linear layer; choose"):
        generate(hp.path, "zcu104", tmp_path / "a", linear="nope", log=lambda m: None)
    with pytest.raises(FitformerError, match="--encoder-layers 7: the model has 6"):
        generate(hp.path, "zcu104", tmp_path / "b", encoder_layers=7, log=lambda m: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_design_missing_a_knob_names_it(tiny_hp_run, tmp_path):
    from fitformer.hls import generate

    _, hp = tiny_hp_run
    design = tmp_path / "design.json"
    design.write_text(json.dumps({"precision": "fx16", "weights_on_chip": True,
                                  "family": "shared", "nonlinear": "fx16",
                                  "design": {"array": {"P": 2, "T": 4},
                                             "nonlinear": {"lanes": 8},
                                             "add_norm": {"lanes": 4}}}))
    with pytest.raises(FitformerError, match=r"has no knob 'R' \(a shared design needs "
                                             r"array: P, T, R; nonlinear: lanes"):
        generate(hp.path, "zcu104", tmp_path / "prj", design=design, log=lambda m: None)
