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
