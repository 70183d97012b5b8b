"""``fitformer estimate``: the latency of a model on one device, with the evidence.

:func:`estimate` checks the request and hands it to the latency back-end of the device's
kind (:mod:`fitformer.hardware.backends`: FPGAs by the analytical accelerator model, GPUs by
an engine model, catalog CPUs by a dense roofline, the host CPU by a measured run); every
back-end returns a :class:`~fitformer.hardware.report.LatencyReport`. Every device's
``call_overhead_ms`` is added (design.md §2, §6). :func:`unit_summary` is the table view.

The names below the imports are re-exported from the back-ends for older callers.
"""

from __future__ import annotations

from fitformer.errors import FitformerError
from fitformer.hardware.accelerator import RESOURCE_KEYS
from fitformer.hardware.backends import BACKENDS, EstimateRequest, backend_for, known_kinds
from fitformer.hardware.backends.cpu import roofline_report
from fitformer.hardware.backends.fpga import fpga_report
from fitformer.hardware.backends.gpu import gpu_report
from fitformer.hardware.backends.host_cpu import (
    BUSY_LOAD_FRACTION,
    MEASURE_ATTEMPTS,
    STEADY_SPREAD,
    measured_report,
    sample_spread,
)
from fitformer.hardware.catalog import Device
from fitformer.hardware.report import LatencyReport
from fitformer.hardware.workload import Workload

__all__ = ["BACKENDS", "BUSY_LOAD_FRACTION", "MEASURE_ATTEMPTS", "STEADY_SPREAD",
           "EstimateRequest", "estimate", "fpga_report", "gpu_report", "known_kinds",
           "measured_report", "roofline_report", "sample_spread", "unit_summary"]


def estimate(device: Device, wl: Workload, *, batch: int = 1, seq_len: int = 128,
             precision: str | None = None, clock_mhz: float | None = None,
             model: str = "default", pruned: str | None = None,
             use_cache: bool = True, tgt_len: int = 0, gpu_engine: str | None = None,
             measure: bool = False) -> LatencyReport:
    """The estimate of ``wl`` on ``device`` from the latency back-end of the device's kind
    (:func:`fitformer.hardware.backends.backend_for`): a
    :class:`~fitformer.hardware.report.LatencyReport` (``to_json()`` gives the JSON contract
    of issue #5).

    Args:
        device: a catalog entry; wl: the workload (:mod:`fitformer.hardware.workload`).
        batch, seq_len: the inference (``seq_len``: source tokens of an encoder-decoder);
            tgt_len: decoder steps of an encoder-decoder (``--tgt-len``, required there).
            precision: pin ``fx16``/``fx8`` (FPGAs) or ``fp32``.
        clock_mhz: FPGA clock override; model / pruned: what the host CPU measures (and a
            GPU with ``measure``).
        gpu_engine: the GPU inference engine (:data:`fitformer.hardware.gpu.ENGINES`).
        measure: also time the real model on the device: a GPU needs CUDA on this machine
            (the report gains ``measured`` and ``measured_over_estimate``); the host CPU is
            always measured; other kinds cannot be.

    Raises:
        FitformerError: bad sizes, a precision the device does not offer, missing figures,
            a device kind no back-end covers (the message names the known kinds),
            ``measure`` on a device that cannot be run here or without a CUDA GPU.
    """
    if batch < 1 or seq_len < 1:
        raise FitformerError(f"--batch-size {batch} and --seq-len {seq_len} must be >= 1.")
    tgt_len = tgt_len if wl.dims.is_seq2seq else 0
    wl.dims.check_seq_len(seq_len, tgt_len)
    backend = backend_for(device)
    if not backend.pins_precision and precision not in (None, "fp32"):
        raise FitformerError(f"--precision {precision}: {device.id} is a {device.kind}, "
                             "estimated by its engine's precision (fp32 or the GPU engine's).")
    if measure and not backend.measures:
        raise FitformerError(f"--measure: {device.id} is a {device.kind}, which fitformer "
                             "cannot run the model on; its latency is the model's estimate "
                             "(drop --measure). --measure times the model on a CUDA GPU; the "
                             "host CPU is always measured.")
    return backend.run(device, wl, EstimateRequest(
        batch=batch, seq_len=seq_len, tgt_len=tgt_len, precision=precision,
        clock_mhz=clock_mhz, model=model, pruned=pruned, use_cache=use_cache,
        gpu_engine=gpu_engine, measure=measure))


def unit_summary(report: dict) -> list[dict]:
    """Per-unit totals over the layers (the table view): latency and cycles summed,
    resources of the unit (counted once; an encoder-decoder's decoder and cross rows run
    on the encoder's units and show ``runs_on`` instead)."""
    out: dict[str, dict] = {}
    for row in report["units"]:
        name = row["unit"].split(".")[0]
        if row.get("stack") not in (None, "encoder"):
            if row["cycles"] is not None:
                # The encoder's hardware unit: its resources count once, there.
                row = {**row, **{k: None for k in RESOURCE_KEYS},
                       "runs_on": row.get("runs_on") or name}
            name = f"{name} ({row['stack']})"
        agg = out.setdefault(name, {**row, "unit": name, "uses": 0, "latency_ms": 0.0,
                                    "cycles": 0 if row["cycles"] is not None else None})
        agg["uses"] += 1
        agg["latency_ms"] += row["latency_ms"]
        if row["cycles"] is not None:
            agg["cycles"] += row["cycles"]
        if row["bound"] == "bandwidth":
            agg["bound"] = "bandwidth"
    return list(out.values())

