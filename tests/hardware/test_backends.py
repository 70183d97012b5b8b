"""The latency back-end registry (issue 15, item 1): one back-end per catalog kind, each
returning a frozen LatencyReport; a new kind is one back-end plus catalog data; and
``estimate --measure`` (item 4) on a machine without a CUDA GPU."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import fitformer.hardware.backends.gpu as G
from fitformer.cli import app
from fitformer.errors import FitformerError
from fitformer.hardware import catalog as C
from fitformer.hardware.backends import (
    BACKENDS,
    EstimateRequest,
    backend_for,
    known_kinds,
    register,
)
from fitformer.hardware.backends.cpu import roofline_report
from fitformer.hardware.catalog import HOST_CPU_ID, Device, load_catalog
from fitformer.hardware.estimate import estimate
from fitformer.hardware.report import LatencyReport
from fitformer.hardware.workload import ModelDims, Workload, work_from_mask

runner = CliRunner()
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(),
                             reason="tests the path of a machine without a CUDA GPU")


def _tiny_workload() -> Workload:
    """One encoder layer of hidden 32 whose six 32 x 32 linears share one HP mask (1 of 2
    blocks kept per stripe, 2 of 4 weights per bank): density 0.25, no model files."""
    mask = np.zeros((32, 32), dtype=bool)
    for s in range(2):
        for r in range(16):          # block row 0 kept in both stripes
            for b in range(4):
                mask[r, s * 16 + b * 4: s * 16 + b * 4 + 2] = True
    dims = ModelDims(layers=1, hidden=32, heads=2, intermediate=32, vocab=10)
    roles = ("q", "k", "v", "attn_out", "ffn_in", "ffn_out")
    return Workload(dims, tuple(work_from_mask(r, 0, mask, 16, 4, "encoder", 16)
                                for r in roles), (16, 16), 4, "hp", 0.75, None, "test")


def _device(did: str) -> Device:
    return load_catalog(only=[did])[0]


def test_one_back_end_per_catalog_kind_and_the_host():
    assert known_kinds() == ["cpu", "fpga", "gpu", HOST_CPU_ID]
    # The catalog's kinds table and the registry agree both ways.
    assert set(C.kind_needs()) == set(known_kinds()) - {HOST_CPU_ID}
    by = {d.id: d for d in load_catalog()}
    assert backend_for(by["zcu104"]).kind == "fpga"
    assert backend_for(by["rtx-4090"]).kind == "gpu"
    assert backend_for(by[HOST_CPU_ID]).kind == HOST_CPU_ID   # a cpu, served by its id
    flags = {k: (b.pins_precision, b.exploits_sparsity, b.measures)
             for k, b in BACKENDS.items()}
    assert flags == {"fpga": (True, True, False), "gpu": (False, False, True),
                     "cpu": (False, False, False), HOST_CPU_ID: (False, True, True)}


def test_unknown_kind_names_the_known_ones_in_registry_and_catalog(tmp_path):
    dev = Device.model_construct(id="tpu-x", name="x", kind="tpu")
    with pytest.raises(FitformerError, match="known kinds: cpu, fpga, gpu, host-cpu"):
        backend_for(dev)
    f = tmp_path / "d.yaml"
    f.write_text("devices:\n  - id: t\n    name: T\n    kind: tpu\n    call_overhead_ms: 0\n"
                 "    price_usd: 1\n    power_w: 1\n")
    with pytest.raises(FitformerError) as exc:
        load_catalog(f)
    msg = str(exc.value)
    assert "device 't': field kind" in msg and "known kinds: cpu, fpga, gpu" in msg
    assert "fitformer/hardware/backends/" in msg


def test_a_kind_registered_twice_is_refused(monkeypatch):
    monkeypatch.setattr("fitformer.hardware.backends._REGISTRY", dict(BACKENDS))

    def other(device, wl, req):
        raise AssertionError("never run")

    with pytest.raises(ValueError, match="'gpu' registered twice"):
        register("gpu")(other)


def test_every_back_end_returns_a_frozen_report(empty_home):
    wl = _tiny_workload()
    for did, method in (("zcu104", "model"), ("rtx-4090", "engine model")):
        rep = estimate(_device(did), wl, batch=1, seq_len=16, use_cache=False)
        assert isinstance(rep, LatencyReport) and rep.method == method
        assert rep.latency_ms == pytest.approx(rep.compute_ms + rep.call_overhead_ms)
        with pytest.raises(dataclasses.FrozenInstanceError):
            rep.latency_ms = 0.0
    cpu = _device("rtx-4090").model_copy(update={"id": "a-cpu", "kind": "cpu"})
    rep = estimate(cpu, wl, batch=1, seq_len=16)
    assert isinstance(rep, LatencyReport) and rep.method == "roofline"
    # The q matrix, dense on a CPU: 2 x 16 x 32 x 32 FLOPs against 82.6 TFLOP/s fp32, and
    # 4 bytes x (32 x 32 weights + 16 x 64 activations) against 1,008 GB/s: bandwidth-bound.
    q = next(u for u in rep.units if u["unit"] == "q")
    assert q["bound"] == "bandwidth"
    assert q["latency_ms"] == pytest.approx(4 * (32 * 32 + 16 * 64) / 1008e9 * 1e3)


def test_a_new_kind_is_one_back_end_plus_catalog_data(tmp_path, monkeypatch, request):
    """The worked example of backends/__init__.py: an NPU estimated by a dense roofline at
    its fp16 peak, added by registering a back-end and declaring the kind in the catalog's
    kinds table; a user file then adds a device of that kind."""
    import fitformer.hardware.backends as B
    from fitformer.select import loop

    monkeypatch.setattr(B, "_REGISTRY", dict(BACKENDS))
    shipped = C._shipped_text()
    monkeypatch.setattr(C, "_shipped_text", lambda: shipped.replace(
        "kinds:\n", "kinds:\n  npu:\n    needs: [peak_tflops_fp16, dram_gbytes_per_s]\n", 1))
    C._kind_needs.cache_clear()
    request.addfinalizer(C._kind_needs.cache_clear)

    @register("npu")
    def npu_backend(device, wl, req: EstimateRequest) -> LatencyReport:
        fp16 = device.model_copy(update={"peak_tflops": device.peak_tflops_fp16})
        return roofline_report(fp16, wl, req)

    f = tmp_path / "npu.yaml"
    f.write_text("devices:\n  - id: my-npu\n    name: My NPU\n    kind: npu\n"
                 "    peak_tflops_fp16: 50\n    dram_gbytes_per_s: 100\n"
                 "    call_overhead_ms: 0.02\n    price_usd: 99\n    power_w: 5\n")
    (npu,) = load_catalog(f, ["my-npu"])
    assert npu.problems() == []
    rep = estimate(npu, _tiny_workload(), batch=1, seq_len=16)
    assert rep.device == "my-npu" and rep.call_overhead_ms == 0.02
    q = next(u for u in rep.units if u["unit"] == "q")
    assert q["latency_ms"] == pytest.approx(4 * (32 * 32 + 16 * 64) / 100e9 * 1e3)
    # select walks it as a dense fp32 device, like a catalog GPU or CPU.
    assert loop._sparse_aware(npu) is False and loop._precisions(npu, None) == ["fp32"]
    # Missing a figure it needs is named, as for every kind.
    f.write_text(f.read_text().replace("    dram_gbytes_per_s: 100\n", ""))
    (npu,) = load_catalog(f, ["my-npu"])
    assert [p["field"] for p in npu.problems()] == ["dram_gbytes_per_s"]


@NO_CUDA
def test_measure_without_a_cuda_gpu_says_so_and_points_to_the_estimate(home):
    res = runner.invoke(app, ["estimate", "--device", "rtx-4090", "--sparsity", "0",
                              "--measure"])
    assert res.exit_code != 0
    msg = " ".join((str(res.exception) + res.output).split())
    assert "--measure times the model on a CUDA GPU, and this machine has none" in msg
    assert "drop --measure" in msg and "fitformer estimate --device rtx-4090" in msg
    with pytest.raises(FitformerError, match="needs a CUDA GPU"):
        G.cuda_latency_ms(torch.nn.Identity(), torch.zeros(1, 4, dtype=torch.long))
    # Without --measure the same command prints the analytical estimate.
    ok = runner.invoke(app, ["estimate", "--device", "rtx-4090", "--sparsity", "0"])
    assert ok.exit_code == 0 and "engine model" in ok.stdout


def test_measure_is_refused_where_nothing_can_run(empty_home):
    wl = _tiny_workload()
    cpu = _device("rtx-4090").model_copy(update={"id": "a-cpu", "kind": "cpu"})
    for dev in (_device("zcu104"), cpu):
        with pytest.raises(FitformerError, match=f"{dev.id} is a {dev.kind}, which "
                                                 "fitformer cannot run the model on"):
            estimate(dev, wl, batch=1, seq_len=16, measure=True)


def test_gpu_measurement_is_reported_beside_the_estimate(home, monkeypatch):
    """The CUDA timing itself cannot run here; with its result given, the report and the
    table carry it beside the engine model with the ratio."""
    seen = {}

    def fake(device, wl, req, precision):
        seen.update(precision=precision, measure=req.measure)
        return {"engine": G.MEASURED_ENGINE[precision], "latency_ms": 2.0,
                "samples_ms": [1.9, 2.0, 2.1], "warmup": G.CUDA_WARMUP, "repeats": 3,
                "gpu": "NVIDIA H200", "same_gpu": G.same_gpu("NVIDIA H200",
                                                             device.name),
                "torch": "x", "cuda": "12.4", "timed": "the forward pass"}

    monkeypatch.setattr(G, "measure_on_cuda", fake)
    res = runner.invoke(app, ["estimate", "--device", "rtx-4090", "--sparsity", "0",
                              "--measure", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert seen == {"precision": "fp16", "measure": True}
    assert rep["engine"] == "tensorrt-fp16" and rep["method"] == "engine model"
    assert rep["measured"]["engine"] == "pytorch-eager-fp16-autocast"
    assert rep["measured_over_estimate"] == pytest.approx(2.0 / rep["latency_ms"])
    res = runner.invoke(app, ["estimate", "--device", "rtx-4090", "--sparsity", "0",
                              "--measure", "--gpu-engine", "pytorch-eager-fp32"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert seen["precision"] == "fp32"
    assert "measured on NVIDIA H200: 2.000 ms (pytorch-eager-fp32, median of 3 runs" in text
    assert "measured / estimate" in text and "compares like with like" not in text
    assert "is not the GPU measured (NVIDIA H200)" in text


@pytest.mark.parametrize("cuda,catalog,same", [
    ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090", True),
    ("NVIDIA H200", "NVIDIA GeForce RTX 4090", False),
    ("NVIDIA GeForce RTX 4080", "NVIDIA GeForce RTX 4090", False),
    ("NVIDIA A100-SXM4-40GB", "NVIDIA A100 40GB", True),
    ("Orin", "NVIDIA Jetson Orin Nano 8GB (Super developer kit)", True),
    ("NVIDIA", "NVIDIA GeForce RTX 4090", False),
])
def test_same_gpu_by_model_number(cuda, catalog, same):
    assert G.same_gpu(cuda, catalog) is same
