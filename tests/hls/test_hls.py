"""fitformer hls / csim (issue 19): generated C++ against the exact fixed-point path."""

from __future__ import annotations

import json
import re

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
    assert f"static x_t xs[{P}][{T}][16];" in src
    assert f"static acc_t psum[{P}][{T}][384];" in src
    assert re.findall(r"variable=xs type=block factor=(\d+) dim=3", src) == [str(B)]
    assert f"for (int p = 0; p < {P}; p++)" in src and f"for (int t = 0; t < {T}; t++)" in src
    assert f"for (int b = 0; b < {B}; b++)" in src
    assert src.count("#pragma HLS PIPELINE II=1") >= 4
    # The pipelined COMPUTE loop runs the analytical model's PE cycles per pass.
    lin = rec["linears"][QUERY]
    assert lin["compute_trips"] == lin["S"] // P * lin["K1"] * 16 * lin["KB"]
    assert f"g < {lin['G']}; g++" in src and f"e < {lin['KB'] * lin['SEGS']}; e++" in src
    assert lin["G"] * lin["KB"] * lin["SEGS"] == lin["compute_trips"]
    from fitformer.hardware.accelerator import _pe_cycles
    from fitformer.hardware.frontends import workload_from_run

    m = workload_from_run(rec["run"]).matrix("q", 0)
    assert _pe_cycles(m, P) == lin["compute_trips"]     # the model's PE cycles per pass
    tcl = (prj / "build_prj.tcl").read_text()
    assert "set_part xczu7ev-ffvc1156-2-e" in tcl and "csynth_design" in tcl


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


def test_csim_project_paths_and_corrupt_json(tmp_path, monkeypatch):
    """A relative project path resolves (g++ runs inside the project); a corrupt
    project.json is a clear error, not a traceback."""
    from fitformer.errors import FitformerError
    from fitformer.hls.csim import _project

    prj = tmp_path / "prj"
    prj.mkdir()
    (prj / "project.json").write_text('{"scope": "linear"}')
    monkeypatch.chdir(tmp_path)
    path, rec = _project("prj")
    assert path == prj.resolve() and path.is_absolute() and rec == {"scope": "linear"}
    (prj / "project.json").write_text("{")
    with pytest.raises(FitformerError, match="not valid JSON"):
        _project("prj")
