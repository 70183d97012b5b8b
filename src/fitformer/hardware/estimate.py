"""``fitformer estimate``: the latency of a model on one device, with the evidence.

FPGAs: the analytical model of the DSE's best design point (``method: "model"``). Catalog
GPUs and CPUs other than the host: a dense roofline (``"roofline"``): ``max(FLOPs / peak,
bytes / bandwidth)`` per operation, since their dense kernels do not exploit HP. The host
CPU: a measured PyTorch run (``"measured"``). Every device's ``call_overhead_ms`` is added
(design.md §2, §6).
"""

from __future__ import annotations

import statistics
import time

from fitformer.errors import FitformerError
from fitformer.hardware.accelerator import RESOURCE_KEYS, Estimate, as_rows
from fitformer.hardware.catalog import HOST_CPU_ID, Device
from fitformer.hardware.workload import Workload


def _base(device: Device, wl: Workload, method: str, batch: int, seq_len: int) -> dict:
    return {"device": device.id, "method": method, "batch_size": batch, "seq_len": seq_len,
            "pattern": wl.pattern, "sparsity": round(wl.overall_sparsity, 6),
            "hp_split": wl.hp_split, "workload": wl.source}


def fpga_report(device: Device, wl: Workload, est: Estimate, batch: int,
                seq_len: int) -> dict:
    """The JSON contract of issue #5 for an FPGA estimate."""
    from fitformer.hardware.dse import platform_of

    avail = platform_of(device, est.clock_mhz).available
    used = est.resources.as_dict()
    overhead = float(device.num("call_overhead_ms") or 0.0)
    return {**_base(device, wl, "model", batch, seq_len),
            "latency_ms": est.compute_ms + overhead, "compute_ms": est.compute_ms,
            "call_overhead_ms": overhead, "precision": est.design.precision,
            "clock_mhz": est.clock_mhz, "resources": used,
            "available": {k: int(v) for k, v in avail.items()},
            "utilization": {k: (used[k] / avail[k] if avail[k] else None)
                            for k in RESOURCE_KEYS},
            "fits": est.resources.fits(avail),
            "weights_on_chip": est.design.weights_on_chip,
            "design": est.design.knobs, "units": as_rows(est)}


def roofline_report(device: Device, wl: Workload, batch: int, seq_len: int) -> dict:
    """Dense roofline of a GPU or CPU at fp32 (Williams et al., CACM 2009).

    Raises:
        FitformerError: the device has no ``peak_tflops`` or ``dram_gbytes_per_s``.
    """
    peak, bw = device.num("peak_tflops"), device.num("dram_gbytes_per_s")
    if not peak or not bw:
        raise FitformerError(f"device {device.id} needs peak_tflops and dram_gbytes_per_s "
                             "for the roofline; give them in a --devices file.")
    d = wl.dims
    tokens = batch * seq_len
    units = []

    def op(unit, layer, flops, nbytes):
        t_c, t_m = flops / (peak * 1e12), nbytes / (bw * 1e9)
        units.append({"unit": unit, "layer": layer, "parallelism": {},
                      **{k: None for k in RESOURCE_KEYS}, "cycles": None,
                      "latency_ms": max(t_c, t_m) * 1e3,
                      "bound": "compute" if t_c >= t_m else "bandwidth"})

    op("embedding", None, tokens * d.hidden * 4, tokens * 3 * d.hidden * 4)
    for m in wl.matrices:
        M, N = m.shape
        n = batch if m.role in ("pooler", "classifier") else tokens
        op(m.role, m.layer, 2 * n * M * N, 4 * (M * N + n * (M + N)))
    for layer in range(d.layers):
        op("attention", layer, batch * d.heads * 4 * seq_len * seq_len * d.head_dim,
           4 * batch * (3 * seq_len * d.hidden + d.heads * seq_len * seq_len))
        for i in (1, 2):
            op(f"add_norm.{i}", layer, 8 * tokens * d.hidden, 4 * 3 * tokens * d.hidden)
    compute_ms = sum(u["latency_ms"] for u in units)
    overhead = float(device.num("call_overhead_ms") or 0.0)
    return {**_base(device, wl, "roofline", batch, seq_len),
            "latency_ms": compute_ms + overhead, "compute_ms": compute_ms,
            "call_overhead_ms": overhead, "precision": "fp32", "clock_mhz": None,
            "resources": {k: None for k in RESOURCE_KEYS},
            "utilization": {k: None for k in RESOURCE_KEYS}, "fits": True,
            "weights_on_chip": None, "units": units}


def measured_report(device: Device, wl: Workload, batch: int, seq_len: int, *,
                    model: str = "default", pruned: str | None = None,
                    repeats: int = 5, use_cache: bool = True) -> dict:
    """Latency of the model measured on this machine with PyTorch (dense fp32 kernels; the
    median of ``repeats`` timed runs after one warm-up). A pruned run is loaded as is (its
    zeros do not speed up dense kernels). Measurements are cached in
    ``$FITFORMER_HOME/measurements/`` by CPU, threads, torch version, model, batch and
    sequence length, with the machine load at the time."""
    import hashlib
    import json
    import os

    import torch

    from fitformer.models.loading import load_classifier, quiet_transformers, resolve_model
    from fitformer.paths import fitformer_home

    ref = resolve_model(pruned or model)
    key = {"cpu": device.name, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "model": ref.key(), "batch": batch, "seq_len": seq_len, "repeats": repeats}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    cache = fitformer_home() / "measurements" / f"{digest}.json"
    times = None
    if use_cache and cache.is_file():
        try:
            times = json.loads(cache.read_text())["samples_ms"]
        except (ValueError, KeyError):
            times = None
    if times is None:
        with quiet_transformers():
            net = load_classifier(ref).eval()
        ids = torch.randint(1, wl.dims.vocab, (batch, seq_len),
                            generator=torch.Generator().manual_seed(0))
        times = []
        with torch.inference_mode():
            net(input_ids=ids)
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                net(input_ids=ids)
                times.append((time.perf_counter() - t0) * 1e3)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({**key, "samples_ms": times,
                                     "load_avg_1min": os.getloadavg()[0]}))
    ms = statistics.median(times)
    return {**_base(device, wl, "measured", batch, seq_len),
            "latency_ms": ms, "compute_ms": ms, "call_overhead_ms": 0.0,
            "precision": "fp32", "clock_mhz": None, "threads": torch.get_num_threads(),
            "resources": {k: None for k in RESOURCE_KEYS},
            "utilization": {k: None for k in RESOURCE_KEYS}, "fits": True,
            "weights_on_chip": None,
            "units": [{"unit": "model", "layer": None, "parallelism": {},
                       **{k: None for k in RESOURCE_KEYS}, "cycles": None,
                       "latency_ms": ms, "bound": None}],
            "samples_ms": times}


def estimate(device: Device, wl: Workload, *, batch: int = 1, seq_len: int = 128,
             precision: str | None = None, clock_mhz: float | None = None,
             model: str = "default", pruned: str | None = None,
             use_cache: bool = True) -> dict:
    """The estimate of ``wl`` on ``device`` as the JSON contract of issue #5.

    Args:
        device: a catalog entry; wl: the workload (:mod:`fitformer.hardware.workload`).
        batch, seq_len: the inference; precision: pin ``fx16``/``fx8`` (FPGAs) or ``fp32``.
        clock_mhz: FPGA clock override; model / pruned: what the host CPU measures.

    Raises:
        FitformerError: bad sizes, a precision the device does not offer, missing figures.
    """
    from fitformer.hardware.dse import explore

    if batch < 1 or seq_len < 1:
        raise FitformerError(f"--batch-size {batch} and --seq-len {seq_len} must be >= 1.")
    wl.dims.check_seq_len(seq_len)
    if device.kind == "fpga":
        est = explore(wl, device, precision=precision, batch=batch, seq_len=seq_len,
                      clock_mhz=clock_mhz, use_cache=use_cache)
        return fpga_report(device, wl, est, batch, seq_len)
    if precision not in (None, "fp32"):
        raise FitformerError(f"--precision {precision}: {device.id} is a {device.kind}, "
                             "estimated at fp32.")
    if device.id == HOST_CPU_ID:
        return measured_report(device, wl, batch, seq_len, model=model, pruned=pruned,
                               use_cache=use_cache)
    return roofline_report(device, wl, batch, seq_len)


def unit_summary(report: dict) -> list[dict]:
    """Per-unit totals over the layers (the table view): latency and cycles summed,
    resources of the unit (counted once)."""
    out: dict[str, dict] = {}
    for row in report["units"]:
        name = row["unit"].split(".")[0]
        agg = out.setdefault(name, {**row, "unit": name, "uses": 0, "latency_ms": 0.0,
                                    "cycles": 0 if row["cycles"] is not None else None})
        agg["uses"] += 1
        agg["latency_ms"] += row["latency_ms"]
        if row["cycles"] is not None:
            agg["cycles"] += row["cycles"]
        if row["bound"] == "bandwidth":
            agg["bound"] = "bandwidth"
    return list(out.values())

