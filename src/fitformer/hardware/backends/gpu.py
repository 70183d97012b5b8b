"""The GPU back-end: the engine model of :mod:`fitformer.hardware.gpu` (design.md §6.7;
``method: "engine model"``) and, with ``--measure`` on a machine with a CUDA GPU, the real
model timed on it beside the estimate.

The measurement (:func:`measure_on_cuda`) cannot run on the project's machines, which have
no GPU: its no-GPU path is tested, the CUDA path is not exercised by the tests (issue 15:
"optional, and never needed by the tests").
"""

from __future__ import annotations

import re
import statistics

from fitformer.errors import FitformerError
from fitformer.hardware.accelerator import RESOURCE_KEYS
from fitformer.hardware.backends import EstimateRequest, register, report_header
from fitformer.hardware.catalog import Device
from fitformer.hardware.report import LatencyReport
from fitformer.hardware.workload import Workload

#: Untimed runs before a CUDA measurement (cuBLAS heuristics, the caching allocator and
#: autocast's weight casts settle in the first calls), then timed runs; the median is
#: reported. Assumed, as the usual practice of PyTorch's ``torch.utils.benchmark``.
CUDA_WARMUP = 10
CUDA_REPEATS = 50
#: What is measured for an engine of each precision: Hugging Face's model in eager PyTorch,
#: fp32, or under ``torch.autocast(float16)`` (a TensorRT engine is not built here).
MEASURED_ENGINE = {"fp32": "pytorch-eager-fp32", "fp16": "pytorch-eager-fp16-autocast"}


def gpu_report(device: Device, wl: Workload, req: EstimateRequest) -> LatencyReport:
    """A catalog GPU with the inference engine ``req.gpu_engine`` (default
    :data:`fitformer.hardware.gpu.DEFAULT_ENGINE`): per-operation roofline at the engine's
    precision and efficiencies, plus its kernel launches, plus the device's
    ``call_overhead_ms`` (once, and once per decoder step of an encoder-decoder). Dense:
    the engines' kernels gain nothing from HP.

    Raises:
        FitformerError: unknown engine, or the device lacks the peak (``peak_tflops_fp16``
            for an fp16 engine, ``peak_tflops`` for fp32) or ``dram_gbytes_per_s``.
    """
    from fitformer.hardware.gpu import DEFAULT_ENGINE, get_engine, gpu_latency

    eng = get_engine(req.gpu_engine or DEFAULT_ENGINE)
    field = "peak_tflops_fp16" if eng.precision == "fp16" else "peak_tflops"
    peak, bw = device.num(field), device.num("dram_gbytes_per_s")
    if not peak or not bw:
        raise FitformerError(f"device {device.id} needs {field} and dram_gbytes_per_s for "
                             f"the {eng.name} engine; give them in a --devices file (or "
                             "choose another --gpu-engine).")
    steps = req.tgt_len if wl.dims.is_seq2seq else 0
    out = gpu_latency(wl, peak_tflops=peak, dram_gbytes_per_s=bw, engine=eng,
                      batch=req.batch, seq_len=req.seq_len, tgt_len=steps)
    units = [{**u, "parallelism": {}, **{k: None for k in RESOURCE_KEYS}, "cycles": None}
             for u in out["units"]]
    units.append({"unit": "kernel_launches", "layer": None, "stack": None, "parallelism": {},
                  **{k: None for k in RESOURCE_KEYS}, "cycles": None,
                  "latency_ms": out["launch_ms"], "bound": "launch"})
    compute_ms = out["compute_ms"] + out["launch_ms"]
    overhead = float(device.num("call_overhead_ms") or 0.0) * (1 + steps)
    return LatencyReport.from_json({
        **report_header(device, wl, "engine model", req),
        "engine": eng.name, "kernels": out["kernels"],
        "launch_ms": out["launch_ms"], "calibrated_gpu": False,
        "latency_ms": compute_ms + overhead, "compute_ms": compute_ms,
        "call_overhead_ms": overhead, "precision": eng.precision, "clock_mhz": None,
        "resources": {k: None for k in RESOURCE_KEYS},
        "utilization": {k: None for k in RESOURCE_KEYS}, "fits": True,
        "weights_on_chip": None, "units": units})


def require_cuda(device: Device) -> None:
    """Raise unless PyTorch sees a CUDA GPU.

    Raises:
        FitformerError: no CUDA GPU (the message says why, as far as PyTorch knows, and that
            the analytical estimate is printed without ``--measure``).
    """
    import torch

    if torch.cuda.is_available():
        return
    why = ("this PyTorch is built without CUDA" if torch.version.cuda is None else
           f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU or driver")
    raise FitformerError(
        f"--measure times the model on a CUDA GPU, and this machine has none ({why}). "
        f"Run it on a machine with the GPU, or drop --measure: `fitformer estimate "
        f"--device {device.id}` prints the analytical estimate (the engine model) without it.")


def cuda_latency_ms(net, input_ids, *, tgt_len: int = 0, fp16: bool = False,
                    warmup: int = CUDA_WARMUP, repeats: int = CUDA_REPEATS) -> list[float]:
    """Milliseconds of ``repeats`` inferences of ``net`` on the current CUDA GPU, each from
    token ids in host memory to logits on the GPU, timed by CUDA events on the stream: the
    host-to-device copy of ``input_ids`` (``(batch, seq)`` int64, pinned) and the forward
    pass (with ``tgt_len``: a greedy translation of exactly ``tgt_len`` tokens,
    :func:`fitformer.kernels.run.infer`). ``warmup`` untimed runs first. ``fp16``: under
    ``torch.autocast("cuda", torch.float16)``, weights kept fp32. ``net`` is moved to the
    GPU. Not run by the tests (no GPU on the project's machines).

    Raises:
        FitformerError: no CUDA GPU (:func:`require_cuda`'s message is the caller's).
    """
    import torch

    from fitformer.kernels.run import infer

    if not torch.cuda.is_available():
        raise FitformerError("cuda_latency_ms needs a CUDA GPU; this machine has none.")
    gpu = torch.device("cuda", torch.cuda.current_device())
    net = net.to(gpu).eval()
    ids = input_ids.pin_memory()
    samples = []
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=fp16):
        for _ in range(warmup):
            infer(net, ids.to(gpu, non_blocking=True), tgt_len)
        torch.cuda.synchronize(gpu)
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            infer(net, ids.to(gpu, non_blocking=True), tgt_len)
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
    return samples


def same_gpu(cuda_name: str, catalog_name: str) -> bool:
    """Whether the GPU PyTorch reports (``torch.cuda.get_device_name()``, e.g. ``NVIDIA
    GeForce RTX 4090``) is the catalog device named ``catalog_name``: they share a model
    number (a word with a digit: ``4090``, ``a100``, ``h200``); a name without one
    (``Orin``) must have all its words, bar the vendor's, in the catalog's name."""
    generic = {"nvidia", "geforce", "tesla", "quadro", "gpu"}
    a, b = (set(re.findall(r"[a-z0-9]+", s.lower())) - generic
            for s in (cuda_name, catalog_name))
    numbers = {w for w in a if any(c.isdigit() for c in w)}
    return bool(numbers & b) if numbers else bool(a) and a <= b


def measure_on_cuda(device: Device, wl: Workload, req: EstimateRequest,
                    precision: str) -> dict:
    """The real model (:func:`~fitformer.hardware.backends.torch_model.masked_model`:
    ``req.pruned``, or ``req.model`` pruned one shot to ``wl``; dense kernels, the masked
    weights as they are) timed on this machine's CUDA GPU by :func:`cuda_latency_ms` on
    random token ids of ``req``'s shape (seed 0), in eager PyTorch at ``precision``
    (``fp32``, or ``fp16`` autocast).

    Returns:
        ``{"engine", "latency_ms" (median), "samples_ms", "warmup", "repeats", "gpu" (the
        CUDA device's name), "same_gpu" (:func:`same_gpu` with the catalog's name), "torch",
        "cuda", "timed"}``.

    Raises:
        FitformerError: no CUDA GPU.
    """
    require_cuda(device)
    import torch

    from fitformer.hardware.backends.torch_model import masked_model

    net, _ = masked_model(wl, req.model, req.pruned)
    ids = torch.randint(3 if wl.dims.is_seq2seq else 1, wl.dims.vocab,
                        (req.batch, req.seq_len), generator=torch.Generator().manual_seed(0))
    samples = cuda_latency_ms(net, ids, tgt_len=req.tgt_len, fp16=precision == "fp16")
    name = torch.cuda.get_device_name()
    return {"engine": MEASURED_ENGINE[precision], "latency_ms": statistics.median(samples),
            "samples_ms": samples, "warmup": CUDA_WARMUP, "repeats": len(samples),
            "gpu": name, "same_gpu": same_gpu(name, device.name),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "timed": "host-to-device copy of the token ids and the forward pass "
                     "(CUDA events; the logits stay on the GPU)"}


@register("gpu", measures=True)
def gpu_backend(device: Device, wl: Workload, req: EstimateRequest) -> LatencyReport:
    """:func:`gpu_report`; with ``req.measure`` also :func:`measure_on_cuda` at the engine's
    precision, in the report as ``measured`` with ``measured_over_estimate`` (measured
    median / estimated ``latency_ms``)."""
    rep = gpu_report(device, wl, req)
    if not req.measure:
        return rep
    meas = measure_on_cuda(device, wl, req, rep.precision)
    return LatencyReport.from_json({**rep.to_json(), "measured": meas,
                                    "measured_over_estimate":
                                        meas["latency_ms"] / rep.latency_ms})
