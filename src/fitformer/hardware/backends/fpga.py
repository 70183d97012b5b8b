"""The FPGA back-end: the analytical accelerator model at the DSE's best design point
(design.md §6.1-6.5; ``method: "model"``), with its resources, the device roofline and the
design's ratio to it."""

from __future__ import annotations

from fitformer.hardware.accelerator import RESOURCE_KEYS, Estimate, as_rows
from fitformer.hardware.backends import EstimateRequest, register, report_header
from fitformer.hardware.catalog import Device
from fitformer.hardware.report import LatencyReport
from fitformer.hardware.workload import Workload


def fpga_report(device: Device, wl: Workload, est: Estimate,
                req: EstimateRequest) -> LatencyReport:
    """The report of a design point ``est`` (the JSON contract of issue #5): latency =
    the design's compute time + the device's ``call_overhead_ms``; resources used and
    available (the part minus its shell), utilisation, whether it fits, the roofline
    (:func:`fitformer.hardware.roofline.fpga_roofline`) and ``roofline_ratio``, the knobs
    and one row per unit and layer."""
    from fitformer.hardware.dse import platform_of
    from fitformer.hardware.roofline import fpga_roofline

    plat = platform_of(device, est.clock_mhz)
    avail = plat.available
    used = est.resources.as_dict()
    overhead = float(device.num("call_overhead_ms") or 0.0)
    roof = fpga_roofline(wl, dsp=avail["dsp"], dsp_type=plat.dsp_type,
                         dram_gbytes_per_s=plat.dram_gbytes_per_s, clock_mhz=est.clock_mhz,
                         precision=est.design.precision, batch=req.batch,
                         seq_len=req.seq_len, tgt_len=req.tgt_len)
    return LatencyReport.from_json({
        **report_header(device, wl, "model", req),
        "design_family": est.design.family, "nonlinear": est.design.nonlinear,
        "roofline": roof, "roofline_ratio": est.compute_ms / roof["roofline_ms"],
        "latency_ms": est.compute_ms + overhead, "compute_ms": est.compute_ms,
        "call_overhead_ms": overhead, "precision": est.design.precision,
        "clock_mhz": est.clock_mhz, "resources": used,
        "available": {k: int(v) for k, v in avail.items()},
        "utilization": {k: (used[k] / avail[k] if avail[k] else None) for k in RESOURCE_KEYS},
        "fits": est.resources.fits(avail),
        "weights_on_chip": est.design.weights_on_chip,
        "design": est.design.knobs, "units": as_rows(est)})


@register("fpga", pins_precision=True, exploits_sparsity=True)
def fpga_backend(device: Device, wl: Workload, req: EstimateRequest) -> LatencyReport:
    """The fastest design point that fits (:func:`fitformer.hardware.dse.explore`, cached
    unless ``req.use_cache`` is false) at ``req.precision`` (or the DSE's choice among the
    device's) and ``req.clock_mhz`` (or the device's)."""
    from fitformer.hardware.dse import explore

    est = explore(wl, device, precision=req.precision, batch=req.batch, seq_len=req.seq_len,
                  clock_mhz=req.clock_mhz, use_cache=req.use_cache, tgt_len=req.tgt_len)
    return fpga_report(device, wl, est, req)
