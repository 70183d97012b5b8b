"""The device catalog: shipped data validates, merges by id, names bad fields."""

import pytest

from fitformer.errors import FitformerError
from fitformer.hardware.catalog import HOST_CPU_ID, load_catalog, order_by_objective

FPGAS = {"pynq-z2", "ultra96-v2", "zcu104", "zcu102", "u50", "u200", "u250", "u280"}


def test_shipped_catalog_has_the_design_devices_with_sources():
    devs = {d.id: d for d in load_catalog()}
    assert FPGAS <= set(devs) and HOST_CPU_ID in devs
    assert sum(d.kind == "gpu" for d in devs.values()) == 2
    for d in devs.values():
        for name, fig in d:
            if hasattr(fig, "source"):
                assert fig.source, (d.id, name)
    zcu104 = devs["zcu104"]
    assert (zcu104.num("dsp"), zcu104.num("bram_18k"), zcu104.num("uram")) == (1728, 624, 96)
    # About 5 MB on chip (the seed's figure): 624 x 18 Kb + 96 x 288 Kb.
    assert zcu104.on_chip_bytes() == (624 * 18432 + 96 * 294912) // 8
    assert devs["pynq-z2"].dsp_type.value == "DSP48E1"
    assert devs[HOST_CPU_ID].num("price_usd") is None and devs[HOST_CPU_ID].num("threads") >= 1


def test_shell_is_subtracted_once():
    u250 = {d.id: d for d in load_catalog()}["u250"]
    avail = u250.available()
    assert avail["dsp"] == 12288 - 780 and avail["uram"] == 1280
    zcu104 = {d.id: d for d in load_catalog()}["zcu104"]
    assert zcu104.available()["dsp"] == 1728  # no shell figure: nothing subtracted


def test_user_file_merges_by_id_and_adds(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("""
devices:
  - id: zcu104
    price_usd: {value: 1678, source: "my quote 2026-11", verified: true}
  - id: host-cpu
    price_usd: {value: 0, source: "already owned", verified: true}
  - id: my-board
    name: My board
    kind: fpga
    dsp: {value: 100, source: mine}
    call_overhead_ms: {value: 0.1, source: mine}
    price_usd: {value: 99, source: mine}
    power_w: {value: 5, source: mine}
""")
    devs = load_catalog(f)
    by = {d.id: d for d in devs}
    assert by["zcu104"].num("price_usd") == 1678 and by["zcu104"].num("dsp") == 1728
    assert by["my-board"].num("dsp") == 100
    ordered = [d.id for d in order_by_objective(devs, "price")]
    assert ordered[:2] == ["host-cpu", "my-board"]
    assert [d.id for d in load_catalog(f, only=["my-board", "u50"])] == ["u50", "my-board"]


@pytest.mark.parametrize("text,needles", [
    ("devices:\n  - id: zcu104\n    dsp: {value: -5, source: x}\n", ["'zcu104'", "dsp", ">= 0"]),
    ("devices:\n  - id: new\n    name: N\n    kind: tpu\n", ["'new'", "kind"]),
    ("devices:\n  - id: zcu104\n    dsp: {value: lots, source: x}\n", ["dsp", "number"]),
    ("devices:\n  - name: no id\n", ["entry 0 has no 'id'"]),
    ("devices: [1, 2\n", ["not valid YAML"]),
    ("hello: 1\n", ["no top-level 'devices'"]),
    ("devices:\n  - id: zcu104\n    colour: red\n", ["colour", "Extra inputs"]),
])
def test_malformed_user_file_names_entry_and_field(tmp_path, text, needles):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(FitformerError) as exc:
        load_catalog(f)
    for n in needles:
        assert n in str(exc.value), (n, str(exc.value))


def test_only_and_objective_errors(tmp_path):
    with pytest.raises(FitformerError, match="unknown device id"):
        load_catalog(only=["zcu999"])
    with pytest.raises(FitformerError, match="does not exist"):
        load_catalog(tmp_path / "none.yaml")
    with pytest.raises(FitformerError, match="choose price or power"):
        order_by_objective(load_catalog(), "speed")


# Issue 17, item 4: incomplete or implausible entries load, and every problem is named.

BROKEN = """
devices:
  - id: zcu104
    dsp: 0
    bram_18k: 0
    lut: 0
    ff: 0
  - id: zcu102
    clock_mhz: 0
  - id: gpu-zero
    name: GPU with 0 TFLOPS
    kind: gpu
    peak_tflops: 0
    peak_tflops_fp16: 0
    dram_gbytes_per_s: 100
    call_overhead_ms: 0.05
    price_usd: 100
    power_w: 50
  - id: insane
    name: Insane FPGA
    kind: fpga
    dsp: 100
    bram_18k: 10000000000
    lut: 1
    ff: 100000
    clock_mhz: 200
    dram_gbytes_per_s: 10
    precisions: []
    call_overhead_ms: 0.1
    price_usd: 100
    power_w: null
"""


def test_incomplete_and_implausible_entries_load_with_every_problem_named(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text(BROKEN)
    by = {d.id: d for d in load_catalog(f)}
    msgs = {i: [p["message"] for p in by[i].problems()] for i in by}
    assert [p["field"] for p in by["zcu104"].problems()] == ["dsp", "bram_18k", "lut", "ff"]
    assert all("is 0" in m for m in msgs["zcu104"])
    assert [p["field"] for p in by["zcu102"].problems()] == ["clock_mhz"]
    assert by["zcu102"].problems(ignore=("clock_mhz",)) == []      # --clock-mhz gives it
    assert [p["problem"] for p in by["gpu-zero"].problems()] == ["missing"]
    assert "peak_tflops_fp16" in msgs["gpu-zero"][0]
    # 10,000,000,000 BRAM, 1 LUT and no precisions: three problems, bounds in the message.
    assert msgs["insane"] == [
        "bram_18k 10,000,000,000 is outside the plausible range [1, 100,000] BRAM_18K blocks",
        "lut 1 is outside the plausible range [1,000, 20,000,000] LUTs",
        "precisions [] lists neither fx16 nor fx8, the accelerator's precisions (give e.g. "
        "precisions: [fx16, fx8])"]
    assert by["insane"].summary()["problems"] == msgs["insane"]
    assert all(not d.problems() for d in load_catalog())          # the shipped catalog


def test_every_malformed_entry_is_reported_in_one_pass(tmp_path):
    f = tmp_path / "four-bad.yaml"
    f.write_text("""
devices:
  - id: new-board
    name: New
    kind: fpga
  - id: zcu104
    dsp: -5
  - id: tpu
    name: T
    kind: tpu
    call_overhead_ms: 0.1
    price_usd: 1
    power_w: 1
  - name: no id
  - id: u50
    colour: red
""")
    with pytest.raises(FitformerError) as exc:
        load_catalog(f)
    msg = str(exc.value)
    assert "7 problem(s)" in msg
    for needle in ("entry 3 has no 'id'", "'zcu104': field dsp", ">= 0", "'u50': field colour",
                   "'tpu': field kind"):
        assert needle in msg, needle
    # A left-out price, power or overhead says that null is allowed.
    for field in ("price_usd", "power_w", "call_overhead_ms"):
        assert f"'new-board': field {field}: required; give a number, or null when " \
               f"unknown ({field}: null" in msg


def test_devices_command_warns_of_every_problem(tmp_path):
    from typer.testing import CliRunner

    from fitformer.cli import app

    f = tmp_path / "broken.yaml"
    f.write_text(BROKEN)
    res = CliRunner().invoke(app, ["devices", "--devices", str(f)])
    assert res.exit_code == 0, res.output
    warnings = [ln for ln in res.output.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 4 + 1 + 1 + 3 + 1, res.output        # problems + summary
    assert "warning: insane: lut 1 is outside the plausible range [1,000, 20,000,000]" \
        in res.output


# Issue 17, item 5: every catalog device but the host has a sourced price.

def test_every_catalog_device_has_a_sourced_dated_price():
    from importlib import resources

    import yaml

    data = yaml.safe_load(resources.files("fitformer.hardware").joinpath("devices.yaml")
                          .read_text())
    devs = load_catalog()
    assert len(devs) == 11
    for d in devs:
        if d.id == HOST_CPU_ID:
            assert d.num("price_usd") is None and d.price_kind is None
            continue
        assert d.num("price_usd") and d.num("price_usd") > 0, d.id
        assert d.price_kind in ("list", "street", "used"), d.id
        assert d.price_usd.source in data["sources"], (d.id, d.price_usd.source)
        assert d.price_usd.date, d.id
        if d.num("power_w") is None:
            assert d.power_w.note, d.id          # unknown power says why
    ordered = [d.id for d in order_by_objective(devs, "price")]
    assert ordered[-1] == HOST_CPU_ID            # unpriced last
