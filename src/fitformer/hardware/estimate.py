"""``fitformer estimate``: the latency of a model on one device, with the evidence.

FPGAs: the analytical model of the DSE's best design point (``method: "model"``). Catalog
GPUs and CPUs other than the host: a dense roofline (``"roofline"``): ``max(FLOPs / peak,
bytes / bandwidth)`` per operation, since their dense kernels do not exploit HP. The host
CPU: a measured run (``"measured"``), pruned linears on the HP CPU kernel. Every device's
``call_overhead_ms`` is added (design.md §2, §6).
"""

from __future__ import annotations

import statistics

from fitformer.errors import FitformerError
from fitformer.hardware.accelerator import RESOURCE_KEYS, Estimate, as_rows
from fitformer.hardware.catalog import HOST_CPU_ID, Device
from fitformer.hardware.workload import Workload


def _base(device: Device, wl: Workload, method: str, batch: int, seq_len: int,
          tgt_len: int = 0) -> dict:
    extra = {"tgt_len": tgt_len} if wl.dims.is_seq2seq else {}
    return {"device": device.id, "method": method, "batch_size": batch, "seq_len": seq_len,
            **extra, "pattern": wl.pattern, "sparsity": round(wl.overall_sparsity, 6),
            "hp_split": wl.hp_split, "workload": wl.source}


def fpga_report(device: Device, wl: Workload, est: Estimate, batch: int,
                seq_len: int, tgt_len: int = 0) -> dict:
    """The JSON contract of issue #5 for an FPGA estimate."""
    from fitformer.hardware.dse import platform_of
    from fitformer.hardware.roofline import fpga_roofline

    plat = platform_of(device, est.clock_mhz)
    avail = plat.available
    used = est.resources.as_dict()
    overhead = float(device.num("call_overhead_ms") or 0.0)
    roof = fpga_roofline(wl, dsp=avail["dsp"], dsp_type=plat.dsp_type,
                         dram_gbytes_per_s=plat.dram_gbytes_per_s, clock_mhz=est.clock_mhz,
                         precision=est.design.precision, batch=batch, seq_len=seq_len,
                         tgt_len=tgt_len)
    return {**_base(device, wl, "model", batch, seq_len, tgt_len),
            "design_family": est.design.family, "nonlinear": est.design.nonlinear,
            "roofline": roof, "roofline_ratio": est.compute_ms / roof["roofline_ms"],
            "latency_ms": est.compute_ms + overhead, "compute_ms": est.compute_ms,
            "call_overhead_ms": overhead, "precision": est.design.precision,
            "clock_mhz": est.clock_mhz, "resources": used,
            "available": {k: int(v) for k, v in avail.items()},
            "utilization": {k: (used[k] / avail[k] if avail[k] else None)
                            for k in RESOURCE_KEYS},
            "fits": est.resources.fits(avail),
            "weights_on_chip": est.design.weights_on_chip,
            "design": est.design.knobs, "units": as_rows(est)}


def roofline_report(device: Device, wl: Workload, batch: int, seq_len: int,
                    tgt_len: int = 0) -> dict:
    """Dense roofline of a GPU or CPU at fp32 (Williams et al., CACM 2009): per operation
    ``max(FLOPs / peak, bytes / bandwidth)``. An encoder-decoder's decoder re-reads its
    weights at every one of the ``tgt_len`` steps (one token per sentence each), which
    makes decoding bandwidth-bound; the device's ``call_overhead_ms`` counts once for the
    encoder and once per decoder step (a host-driven loop: the next token is chosen on the
    host), the launches of the kernels inside one call are not modelled.

    Raises:
        FitformerError: the device has no ``peak_tflops`` or ``dram_gbytes_per_s``.
    """
    from fitformer.hardware.accelerator import Inference

    peak, bw = device.num("peak_tflops"), device.num("dram_gbytes_per_s")
    if not peak or not bw:
        raise FitformerError(f"device {device.id} needs peak_tflops and dram_gbytes_per_s "
                             "for the roofline; give them in a --devices file.")
    d = wl.dims
    inf = Inference(batch, seq_len, tgt_len if d.is_seq2seq else 0)
    tokens = inf.tokens
    units = []

    def op(unit, layer, flops, nbytes, stack="encoder"):
        t_c, t_m = flops / (peak * 1e12), nbytes / (bw * 1e9)
        units.append({"unit": unit, "layer": layer, "stack": stack, "parallelism": {},
                      **{k: None for k in RESOURCE_KEYS}, "cycles": None,
                      "latency_ms": max(t_c, t_m) * 1e3,
                      "bound": "compute" if t_c >= t_m else "bandwidth"})

    rows_per_token = 2 if d.is_seq2seq else 3
    op("embedding", None, tokens * d.hidden * 4, tokens * rows_per_token * d.hidden * 4)
    steps = inf.tgt_len
    if steps:
        op("embedding", None, steps * batch * d.hidden * 4,
           steps * batch * rows_per_token * d.hidden * 4, "decoder")
    for m in wl.matrices:
        M, N = m.shape
        n, uses = inf.linear_use(m)
        op(m.role, m.layer, uses * 2 * n * M * N, uses * 4 * (M * N + n * (M + N)), m.stack)
    for layer in range(d.layers):
        op("attention", layer, batch * d.heads * 4 * seq_len * seq_len * d.head_dim,
           4 * batch * (3 * seq_len * d.hidden + d.heads * seq_len * seq_len))
        for i in (1, 2):
            op(f"add_norm.{i}", layer, 8 * tokens * d.hidden, 4 * 3 * tokens * d.hidden)
    for layer in range(d.decoder_layers):
        kv = steps * (steps + 1) // 2          # cached keys read over the steps
        op("attention", layer, batch * 4 * kv * d.hidden,
           4 * batch * (2 * kv * d.hidden + steps * 2 * d.hidden), "decoder")
        op("attention", layer, batch * 4 * steps * seq_len * d.hidden,
           4 * batch * steps * (2 * seq_len * d.hidden + 2 * d.hidden), "cross")
        for i in (1, 2, 3):
            op(f"add_norm.{i}", layer, 8 * steps * batch * d.hidden,
               4 * 3 * steps * batch * d.hidden, "decoder")
    if d.final_norm:        # pre-norm stacks end with a layer norm
        op("add_norm.final", None, 8 * tokens * d.hidden, 4 * 3 * tokens * d.hidden)
        if steps:
            op("add_norm.final", None, 8 * steps * batch * d.hidden,
               4 * 3 * steps * batch * d.hidden, "decoder")
    compute_ms = sum(u["latency_ms"] for u in units)
    # A host-driven decoding loop calls the device once for the encoder and once per step
    # (the next token is chosen on the host), so the call overhead counts 1 + tgt_len times.
    overhead = float(device.num("call_overhead_ms") or 0.0) * (1 + steps)
    return {**_base(device, wl, "roofline", batch, seq_len, tgt_len),
            "latency_ms": compute_ms + overhead, "compute_ms": compute_ms,
            "call_overhead_ms": overhead, "precision": "fp32", "clock_mhz": None,
            "resources": {k: None for k in RESOURCE_KEYS},
            "utilization": {k: None for k in RESOURCE_KEYS}, "fits": True,
            "weights_on_chip": None, "units": units}


def gpu_report(device: Device, wl: Workload, batch: int, seq_len: int, tgt_len: int = 0,
               engine: str | None = None) -> dict:
    """A catalog GPU with an inference engine (:mod:`fitformer.hardware.gpu`): per-operation
    roofline at the engine's precision and efficiencies, plus its kernel launches, plus the
    device's ``call_overhead_ms`` (once, and once per decoder step of an encoder-decoder).
    Dense: the engines' kernels gain nothing from HP.

    Raises:
        FitformerError: unknown engine, or the device lacks the peak (``peak_tflops_fp16``
            for an fp16 engine, ``peak_tflops`` for fp32) or ``dram_gbytes_per_s``.
    """
    from fitformer.hardware.gpu import DEFAULT_ENGINE, get_engine, gpu_latency

    eng = get_engine(engine or DEFAULT_ENGINE)
    field = "peak_tflops_fp16" if eng.precision == "fp16" else "peak_tflops"
    peak, bw = device.num(field), device.num("dram_gbytes_per_s")
    if not peak or not bw:
        raise FitformerError(f"device {device.id} needs {field} and dram_gbytes_per_s for "
                             f"the {eng.name} engine; give them in a --devices file (or "
                             "choose another --gpu-engine).")
    steps = tgt_len if wl.dims.is_seq2seq else 0
    out = gpu_latency(wl, peak_tflops=peak, dram_gbytes_per_s=bw, engine=eng, batch=batch,
                      seq_len=seq_len, tgt_len=steps)
    units = [{**u, "parallelism": {}, **{k: None for k in RESOURCE_KEYS}, "cycles": None}
             for u in out["units"]]
    units.append({"unit": "kernel_launches", "layer": None, "stack": None, "parallelism": {},
                  **{k: None for k in RESOURCE_KEYS}, "cycles": None,
                  "latency_ms": out["launch_ms"], "bound": "launch"})
    compute_ms = out["compute_ms"] + out["launch_ms"]
    overhead = float(device.num("call_overhead_ms") or 0.0) * (1 + steps)
    return {**_base(device, wl, "engine model", batch, seq_len, tgt_len),
            "engine": eng.name, "kernels": out["kernels"],
            "launch_ms": out["launch_ms"], "calibrated_gpu": False,
            "latency_ms": compute_ms + overhead, "compute_ms": compute_ms,
            "call_overhead_ms": overhead, "precision": eng.precision, "clock_mhz": None,
            "resources": {k: None for k in RESOURCE_KEYS},
            "utilization": {k: None for k in RESOURCE_KEYS}, "fits": True,
            "weights_on_chip": None, "units": units}


def _host_model(wl: Workload, model: str, pruned: str | None):
    """``(model ready to time, backend, what it is)`` for the host CPU: a pruned run or
    container, or ``model`` pruned one shot to ``wl``'s pattern and sparsity, with its
    pruned linears on the HP CPU kernel; the dense model otherwise."""
    from pathlib import Path

    import torch

    from fitformer.kernels.cpu import convert
    from fitformer.models.loading import load_classifier, quiet_transformers, resolve_model

    if wl.dims.is_seq2seq:
        return _host_translation_model(wl, model, pruned)
    if pruned is not None and Path(pruned).is_file():
        from fitformer.formats.container import read_container
        from fitformer.formats.export import rebuild_model
        from fitformer.hardware.frontends import container_masks

        net = rebuild_model(read_container(Path(pruned)))
        masks = container_masks(Path(pruned))[0]
    elif pruned is not None:
        from fitformer.formats.export import load_pruned_run

        net, masks, _ = load_pruned_run(pruned)
    else:
        with quiet_transformers():
            net = load_classifier(resolve_model(model))
        if wl.pattern == "dense" or wl.sparsity <= 0.0:
            return net.eval(), "dense", "dense"
        from fitformer.hardware.frontends import one_shot_masks

        masks = one_shot_masks(model, wl.pattern, wl.sparsity, block=wl.block,
                               banks=wl.banks,
                               level2_density=(wl.hp_split or {}).get("d2"))
        with torch.no_grad():
            for name, m in masks.items():
                net.get_submodule(name).weight.mul_(torch.as_tensor(m))
    info = convert(net, {k: torch.as_tensor(v) for k, v in masks.items()}, r=wl.block[0])
    return net.eval(), info["backend"], f"{wl.pattern} {wl.sparsity}"


def _host_translation_model(wl: Workload, model: str, pruned: str | None):
    """:func:`_host_model` for an encoder-decoder: a pruned translation run, or the dense
    run ``model`` pruned one shot to ``wl``'s pattern and sparsity."""
    import torch

    from fitformer.kernels.cpu import convert
    from fitformer.models.seq2seq import load_translation_model

    if pruned is not None:
        from safetensors.torch import load_file

        from fitformer.formats.export import check_pruned_dir

        run = check_pruned_dir(pruned)
        net, _ = load_translation_model(str(run))
        masks = {k: v.to(torch.bool) for k, v in load_file(str(run / "masks.safetensors")).items()}
    else:
        net, _ = load_translation_model(model)
        if wl.pattern == "dense" or wl.sparsity <= 0.0:
            return net.eval(), "dense", "dense"
        from fitformer.hardware.frontends import one_shot_masks

        masks = {k: torch.as_tensor(v) for k, v in one_shot_masks(
            model, wl.pattern, wl.sparsity, block=wl.block, banks=wl.banks,
            level2_density=(wl.hp_split or {}).get("d2")).items()}
        with torch.no_grad():
            for name, m in masks.items():
                net.get_submodule(name).weight.mul_(m)
    info = convert(net, masks, r=wl.block[0])
    return net.eval(), info["backend"], f"{wl.pattern} {wl.sparsity}"


#: A host measurement is steady when the interquartile range of its samples is at most this
#: fraction of their median (Tukey's IQR as a robust spread, Hoaglin, Mosteller & Tukey,
#: *Understanding Robust and Exploratory Data Analysis*, 1983). 25% keeps an idle machine's
#: run-to-run noise (a few %) and flags a loaded one (samples 136-928 ms: 79%).
STEADY_SPREAD = 0.25
MEASURE_ATTEMPTS = 3
#: A host measurement taken when the 1-minute load average was at least this fraction of the
#: CPU count is not steady either, whatever its spread: torch's threads then wait for each
#: other evenly, so the samples agree and are all slow (measured here, 2 CPUs, 2026-11-30:
#: MiniLM batch 1 x 128 dense at 898 ms with spread 0.2-4 % at load 4.4, against 23.7 ms
#: idle; 133 ms at load 1.7).
BUSY_LOAD_FRACTION = 0.75


def sample_spread(times: list[float]) -> float:
    """Interquartile range over median of timing samples (0 for fewer than two)."""
    import math

    if len(times) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    med = statistics.median(times)
    return (q3 - q1) / med if med > 0 else math.inf


def _judged(record: dict) -> dict:
    """``record`` with ``spread``, ``busy`` and ``steady`` (re)judged: steady when the spread
    is at most :data:`STEADY_SPREAD` and the machine was not busy (1-minute load before the
    timing below :data:`BUSY_LOAD_FRACTION` x CPUs); a cache written under an older rule is
    judged again by its samples and load."""
    spread = sample_spread(record["samples_ms"])
    load, cpus = record.get("load_avg_1min"), record.get("cpus")
    busy = bool(load is not None and cpus and load >= BUSY_LOAD_FRACTION * cpus)
    return {**record, "spread": spread, "busy": busy,
            "steady": spread <= STEADY_SPREAD and not busy}


def _steadier(a: dict | None, b: dict) -> dict:
    """Of two judged measurements the one to use: a steady one over an unsteady one, else
    the smaller spread (``b``, the newer, on a tie)."""
    if a is None:
        return b
    if a["steady"] != b["steady"]:
        return a if a["steady"] else b
    return b if b["steady"] or b["spread"] <= a["spread"] else a


def _measure_host(wl: Workload, model: str, pruned: str | None, batch: int, seq_len: int,
                  repeats: int, tgt_len: int) -> dict:
    """Time the host model up to :data:`MEASURE_ATTEMPTS` times, stopping at the first
    steady attempt; the steadiest attempt, judged, with the machine's load before it."""
    import os
    import time

    import torch

    from fitformer.kernels.run import median_latency_ms

    net, backend, _ = _host_model(wl, model, pruned)
    ids = torch.randint(3 if wl.dims.is_seq2seq else 1, wl.dims.vocab, (batch, seq_len),
                        generator=torch.Generator().manual_seed(0))
    best = None
    attempts = 0
    for _ in range(MEASURE_ATTEMPTS):
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        times = median_latency_ms({"model": net}, ids, repeats,
                                  tgt_len if wl.dims.is_seq2seq else 0)["model"]
        attempts += 1
        rec = _judged({"samples_ms": times, "backend": backend, "load_avg_1min": load,
                       "cpus": os.cpu_count(),
                       "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        best = _steadier(best, rec)
        if rec["steady"]:
            break
    return {**best, "attempts": attempts}


def measured_report(device: Device, wl: Workload, batch: int, seq_len: int, *,
                    model: str = "default", pruned: str | None = None,
                    repeats: int = 10, use_cache: bool = True, tgt_len: int = 0) -> dict:
    """Latency of the model measured on this machine (fp32; the median of ``repeats`` timed
    runs after one warm-up; an encoder-decoder translates ``batch`` random source sentences
    of ``seq_len`` tokens into exactly ``tgt_len`` tokens, greedy). A pruned model
    (``pruned``: a run directory or HP container; or ``model`` pruned one shot to ``wl``'s
    pattern and sparsity, which has the same kept counts as the trained point) runs its
    pruned linears on the HP CPU kernel (:mod:`fitformer.kernels.cpu`, ``backend:
    "hp-cpu"``), or on dense kernels when the kernel cannot be built.

    Steadiness: the samples' spread, interquartile range over median (``spread``), at most
    :data:`STEADY_SPREAD`, on a machine that was not busy (:data:`BUSY_LOAD_FRACTION`). An
    unsteady attempt is repeated (up to :data:`MEASURE_ATTEMPTS`
    in all) and the steadiest kept. Measurements are cached in
    ``$FITFORMER_HOME/measurements/`` by CPU, threads, torch version, model, structure,
    backend, batch and sequence length, with the 1-minute load average before the timing
    and the CPU count. A cached unsteady figure is measured again at the next call and the
    steadier of the two is kept; a steady cached figure is never replaced by an unsteady one
    (also not with ``use_cache=False``, which measures afresh). The report carries
    ``steady``, ``spread``, ``load_avg_1min``, ``cpus``, ``attempts`` and, when an unsteady
    cached figure was measured again, ``remeasured_from`` (its median and spread)."""
    import hashlib
    import json

    import torch

    from fitformer.kernels.cpu import kernel_digest, load_kernel
    from fitformer.models.loading import resolve_model
    from fitformer.paths import fitformer_home

    key = {"cpu": device.name, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "model": resolve_model(model).key() if pruned is None else str(pruned),
           "structure": wl.digest if pruned is None and wl.pattern != "dense" else None,
           "kernel": kernel_digest() if load_kernel() is None else "dense-fallback",
           "batch": batch, "seq_len": seq_len,
           "repeats": repeats, **({"tgt_len": tgt_len} if wl.dims.is_seq2seq else {})}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    cache = fitformer_home() / "measurements" / f"{digest}.json"
    stored = None
    if cache.is_file():
        try:
            stored = json.loads(cache.read_text())
            stored["backend"]       # noqa: B018 - must be present
            stored = _judged(stored)
        except (ValueError, KeyError, TypeError, statistics.StatisticsError):
            stored = None
    remeasured_from = None
    if use_cache and stored is not None and stored["steady"]:
        chosen = stored
    else:
        fresh = {**key, **_measure_host(wl, model, pruned, batch, seq_len, repeats,
                                        tgt_len)}
        if use_cache and stored is not None:        # an unsteady cached figure: re-measured
            remeasured_from = {"latency_ms": statistics.median(stored["samples_ms"]),
                               "spread": stored["spread"],
                               "load_avg_1min": stored.get("load_avg_1min")}
            chosen = _steadier(stored, fresh)
        else:
            chosen = fresh
        keep = chosen if stored is None else _steadier(stored, chosen)
        if keep is not stored:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(keep))
    times = chosen["samples_ms"]
    ms = statistics.median(times)
    return {**_base(device, wl, "measured", batch, seq_len, tgt_len),
            "latency_ms": ms, "compute_ms": ms, "call_overhead_ms": 0.0,
            "precision": "fp32", "clock_mhz": None, "threads": torch.get_num_threads(),
            "backend": chosen["backend"], "steady": chosen["steady"],
            "spread": chosen["spread"],
            "steady_rule": f"IQR/median <= {STEADY_SPREAD} and 1-min load < "
                           f"{BUSY_LOAD_FRACTION} x CPUs",
            "load_avg_1min": chosen.get("load_avg_1min"), "cpus": chosen.get("cpus"),
            "attempts": chosen.get("attempts"), "remeasured_from": remeasured_from,
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
             use_cache: bool = True, tgt_len: int = 0, gpu_engine: str | None = None
             ):
    """The estimate of ``wl`` on ``device`` from the latency back-end of the device's kind
    (:data:`BACKENDS`): a :class:`~fitformer.hardware.report.LatencyReport` (``to_json()``
    gives the JSON contract of issue #5).

    Args:
        device: a catalog entry; wl: the workload (:mod:`fitformer.hardware.workload`).
        batch, seq_len: the inference (``seq_len``: source tokens of an encoder-decoder);
            tgt_len: decoder steps of an encoder-decoder (``--tgt-len``, required there).
            precision: pin ``fx16``/``fx8`` (FPGAs) or ``fp32``.
        clock_mhz: FPGA clock override; model / pruned: what the host CPU measures.
        gpu_engine: the GPU inference engine (:data:`fitformer.hardware.gpu.ENGINES`).

    Raises:
        FitformerError: bad sizes, a precision the device does not offer, missing figures,
            a device kind no back-end covers (the message names the known kinds).
    """
    if batch < 1 or seq_len < 1:
        raise FitformerError(f"--batch-size {batch} and --seq-len {seq_len} must be >= 1.")
    tgt_len = tgt_len if wl.dims.is_seq2seq else 0
    wl.dims.check_seq_len(seq_len, tgt_len)
    backend = BACKENDS.get(HOST_CPU_ID if device.id == HOST_CPU_ID else device.kind)
    if backend is None:
        raise FitformerError(f"device {device.id} has kind {device.kind!r}, which no latency "
                             f"back-end covers; known kinds: {', '.join(sorted(BACKENDS))}.")
    if device.kind != "fpga" and precision not in (None, "fp32"):
        raise FitformerError(f"--precision {precision}: {device.id} is a {device.kind}, "
                             "estimated by its engine's precision (fp32 or the GPU engine's).")
    from fitformer.hardware.report import LatencyReport

    return LatencyReport.from_json(backend(
        device, wl, batch=batch, seq_len=seq_len, tgt_len=tgt_len, precision=precision,
        clock_mhz=clock_mhz, model=model, pruned=pruned, use_cache=use_cache,
        gpu_engine=gpu_engine))


def _fpga_backend(device, wl, *, batch, seq_len, tgt_len, precision, clock_mhz, use_cache,
                  **_):
    from fitformer.hardware.dse import explore

    est = explore(wl, device, precision=precision, batch=batch, seq_len=seq_len,
                  clock_mhz=clock_mhz, use_cache=use_cache, tgt_len=tgt_len)
    return fpga_report(device, wl, est, batch, seq_len, tgt_len)


def _gpu_backend(device, wl, *, batch, seq_len, tgt_len, gpu_engine, **_):
    return gpu_report(device, wl, batch, seq_len, tgt_len, gpu_engine)


def _cpu_backend(device, wl, *, batch, seq_len, tgt_len, **_):
    return roofline_report(device, wl, batch, seq_len, tgt_len)


def _host_backend(device, wl, *, batch, seq_len, tgt_len, model, pruned, use_cache, **_):
    return measured_report(device, wl, batch, seq_len, model=model, pruned=pruned,
                           use_cache=use_cache, tgt_len=tgt_len)


#: Latency back-ends by catalog ``kind`` (the host CPU by its id): adding a device kind is
#: one function here plus catalog data.
BACKENDS = {"fpga": _fpga_backend, "gpu": _gpu_backend, "cpu": _cpu_backend,
            HOST_CPU_ID: _host_backend}


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

