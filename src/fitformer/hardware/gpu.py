"""GPU latency: a per-operation roofline plus kernel launches, for a named inference engine,
calibrated against published measurements (design.md §6, issue 15).

For one inference, every operation (embedding gather, each linear, each attention's QK^T,
softmax and AV, each add & norm) takes

    ``max(FLOPs / (peak x compute_efficiency), bytes / (bandwidth x memory_efficiency))``

(Williams, Waterman & Patterson, "Roofline", CACM 2009), at the engine's precision: its
peak is the GPU's fp16 tensor figure for an fp16 engine, the fp32 figure for an fp32 one,
and bytes count weights and activations at its element size. On top come the kernels the
engine issues, ``kernels_per_layer x layers + kernels_fixed``, each costing ``launch_us``
(kernel launch and the floor of a small kernel; for eager frameworks the host-side
dispatch that dominates small batches) times a per-GPU factor fitted where the GPU has
calibration points (1 for an uncalibrated GPU, e.g. the catalog's: the report says so),
and the device's ``call_overhead_ms`` (host copies; once per call, and once per
decoder step for an encoder-decoder's host-driven greedy loop).

Engines (:data:`ENGINES`): ``tensorrt-fp16``, a fused engine (TensorRT-class: fused QKV,
fused attention, bias/GELU/residual/norm fused into the GEMMs: ``kernels_per_layer`` 6,
assumed from the TensorRT BERT plugin structure) and ``pytorch-eager-fp32`` (Hugging Face
model in eager PyTorch: about 20 kernels per encoder layer, assumed from its module
structure). ``compute_efficiency``, ``memory_efficiency`` and ``launch_us`` are fitted
(:func:`fit_engine`, scipy least squares on the log of the latency) to the points of
``gpu_calibration.yaml`` marked ``fit: true``; the others are held out. The fitted values
are stored in :data:`ENGINES` and reproduced by ``benchmarks/gpu_calibration.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from importlib import resources

import yaml

from fitformer.errors import FitformerError
from fitformer.hardware.workload import ModelDims, Workload


@dataclass(frozen=True)
class Engine:
    """An inference engine's parameters.

    Attributes:
        name: ``tensorrt-fp16`` or ``pytorch-eager-fp32``.
        precision: ``fp16`` or ``fp32`` (element size 2 or 4 bytes; fp16 uses the tensor
            peak).
        kernels_per_layer, kernels_fixed: kernels per encoder/decoder layer and per call
            (embedding, pooler, classifier, copies); assumed from the engine's structure.
        launch_us: cost of one kernel in microseconds (fitted).
        compute_efficiency, memory_efficiency: fractions of peak FLOPs and bandwidth that
            the engine's kernels reach (fitted).
    """

    name: str
    precision: str
    kernels_per_layer: int
    kernels_fixed: int
    launch_us: float
    compute_efficiency: float
    memory_efficiency: float

    @property
    def bytes_per_value(self) -> int:
        return 2 if self.precision == "fp16" else 4


#: Fitted on the ``fit: true`` points of gpu_calibration.yaml (benchmarks/gpu_calibration.py
#: prints the fit and the held-out errors; docs/gpu-calibration.md).
ENGINES: dict[str, Engine] = {
    "tensorrt-fp16": Engine("tensorrt-fp16", "fp16", 6, 4, launch_us=6.80,
                            compute_efficiency=0.635, memory_efficiency=1.0),
    "pytorch-eager-fp32": Engine("pytorch-eager-fp32", "fp32", 20, 10, launch_us=26.2,
                                 compute_efficiency=0.729, memory_efficiency=1.0),
}
DEFAULT_ENGINE = "tensorrt-fp16"


def get_engine(name: str) -> Engine:
    """The engine called ``name``.

    Raises:
        FitformerError: unknown name (the message lists the known ones).
    """
    try:
        return ENGINES[name]
    except KeyError:
        raise FitformerError(f"--gpu-engine {name!r}: choose from {', '.join(ENGINES)}."
                             ) from None


def gpu_ops(wl: Workload, batch: int, seq_len: int, tgt_len: int, elem: int) -> list[dict]:
    """``{"unit", "layer", "stack", "flops", "bytes"}`` of every operation of one inference
    (dense: a GPU's dense kernels gain nothing from HP), bytes at ``elem`` bytes per value."""
    from fitformer.hardware.accelerator import Inference

    d = wl.dims
    inf = Inference(batch, seq_len, tgt_len if d.is_seq2seq else 0)
    tokens = inf.tokens
    ops = []

    def op(unit, layer, flops, values, stack="encoder"):
        ops.append({"unit": unit, "layer": layer, "stack": stack, "flops": flops,
                    "bytes": values * elem})

    rows_per_token = 2 if d.is_seq2seq else 3
    op("embedding", None, tokens * d.hidden * 4, tokens * (rows_per_token + 1) * d.hidden)
    steps = inf.tgt_len
    if steps:
        op("embedding", None, steps * batch * d.hidden * 4,
           steps * batch * (rows_per_token + 1) * d.hidden, "decoder")
    for m in wl.matrices:
        M, N = m.shape
        n, uses = inf.linear_use(m)
        op(m.role, m.layer, uses * 2 * n * M * N, uses * (M * N + n * (M + N)), m.stack)
    for layer in range(d.layers):
        op("attention", layer, batch * d.heads * 4 * seq_len * seq_len * d.head_dim,
           batch * (4 * seq_len * d.hidden + 2 * d.heads * seq_len * seq_len))
        for i in (1, 2):
            op(f"add_norm.{i}", layer, 8 * tokens * d.hidden, 3 * tokens * d.hidden)
    for layer in range(d.decoder_layers):
        kv = steps * (steps + 1) // 2
        op("attention", layer, batch * 4 * kv * d.hidden,
           batch * (2 * kv * d.hidden + steps * 2 * d.hidden), "decoder")
        op("attention", layer, batch * 4 * steps * seq_len * d.hidden,
           batch * steps * (2 * seq_len * d.hidden + 2 * d.hidden), "cross")
        for i in (1, 2, 3):
            op(f"add_norm.{i}", layer, 8 * steps * batch * d.hidden,
               3 * steps * batch * d.hidden, "decoder")
    if d.final_norm:
        op("add_norm.final", None, 8 * tokens * d.hidden, 3 * tokens * d.hidden)
        if steps:
            op("add_norm.final", None, 8 * steps * batch * d.hidden,
               3 * steps * batch * d.hidden, "decoder")
    return ops


def kernel_count(dims: ModelDims, engine: Engine, tgt_len: int = 0) -> int:
    """Kernels one inference issues: per encoder layer, and per decoder layer and step."""
    return (engine.kernels_per_layer * (dims.layers + dims.decoder_layers * max(0, tgt_len))
            + engine.kernels_fixed * (1 + max(0, tgt_len) if dims.is_seq2seq else 1))


def gpu_latency(wl: Workload, *, peak_tflops: float, dram_gbytes_per_s: float,
                engine: Engine, batch: int, seq_len: int, tgt_len: int = 0) -> dict:
    """Latency of one inference on a GPU with an engine (module docstring), without the
    device's call overhead.

    Args:
        peak_tflops: the GPU's peak at the engine's precision (TFLOP/s).
        dram_gbytes_per_s: its memory bandwidth (GB/s).

    Returns:
        ``{"compute_ms", "launch_ms", "kernels", "units": [{"unit", "layer", "stack",
        "latency_ms", "bound"}]}``.
    """
    peak = peak_tflops * 1e12 * engine.compute_efficiency
    bw = dram_gbytes_per_s * 1e9 * engine.memory_efficiency
    units = []
    for o in gpu_ops(wl, batch, seq_len, tgt_len, engine.bytes_per_value):
        t_c, t_m = o["flops"] / peak, o["bytes"] / bw
        units.append({"unit": o["unit"], "layer": o["layer"], "stack": o["stack"],
                      "latency_ms": max(t_c, t_m) * 1e3,
                      "bound": "compute" if t_c >= t_m else "bandwidth"})
    kernels = kernel_count(wl.dims, engine, tgt_len if wl.dims.is_seq2seq else 0)
    return {"compute_ms": sum(u["latency_ms"] for u in units),
            "launch_ms": kernels * engine.launch_us / 1e3, "kernels": kernels,
            "units": units}


# ---- calibration -------------------------------------------------------------------------

def load_calibration() -> dict:
    """The shipped ``gpu_calibration.yaml`` (points, GPU figures, models, sources)."""
    text = resources.files("fitformer.hardware").joinpath("gpu_calibration.yaml").read_text()
    return yaml.safe_load(text)


def _point_workload(cal: dict, model: str) -> Workload:
    from fitformer.hardware.frontends import dense_workload

    m = cal["models"][model]
    return dense_workload(ModelDims(m["layers"], m["hidden"], m["heads"],
                                    m["intermediate"], m["vocab"]))


def predict_point(cal: dict, point: dict, engine: Engine, gpu_scale: float = 1.0) -> float:
    """Predicted latency (ms) of a calibration point with ``engine``'s parameters, times the
    GPU's fitted speed factor ``gpu_scale``."""
    gpu = cal["gpus"][point["gpu"]]
    peak = gpu["fp16_tflops"] if engine.precision == "fp16" else gpu["fp32_tflops"]
    out = gpu_latency(_point_workload(cal, point["model"]), peak_tflops=peak,
                      dram_gbytes_per_s=gpu["dram_gbytes_per_s"], engine=engine,
                      batch=point["batch"], seq_len=point["seq_len"])
    return out["compute_ms"] + out["launch_ms"] * gpu_scale


def fit_engine(name: str, cal: dict | None = None
               ) -> tuple[Engine, dict[str, float], list[dict]]:
    """Fit ``launch_us``, ``compute_efficiency`` and ``memory_efficiency`` of engine
    ``name``, and a speed factor per GPU (the first GPU of its points is the reference,
    factor 1: what the spec sheet does not say, e.g. clocks, cache, driver), to its ``fit:
    true`` points (least squares on log latency, scipy); predict every point of the engine.

    Returns:
        ``(fitted engine, {gpu: factor}, rows)`` with per point ``measured_ms``,
        ``predicted_ms``, ``error`` (predicted / measured - 1) and ``fit``.
    """
    import numpy as np
    from scipy.optimize import least_squares

    cal = cal or load_calibration()
    base = get_engine(name)
    pts = [p for p in cal["points"] if p["engine"] == name]
    train = [p for p in pts if p.get("fit")]
    gpus = list(dict.fromkeys(p["gpu"] for p in train))
    ref, others = gpus[0], gpus[1:]

    def unpack(x):
        e = replace(base, launch_us=float(x[0]), compute_efficiency=float(x[1]),
                    memory_efficiency=float(x[2]))
        return e, {ref: 1.0, **{g: float(v) for g, v in zip(others, x[3:], strict=True)}}

    def resid(x):
        e, scale = unpack(x)
        return np.array([math.log(predict_point(cal, p, e, scale[p["gpu"]]) / p["latency_ms"])
                         for p in train])

    n = len(others)
    sol = least_squares(resid, x0=[base.launch_us, base.compute_efficiency,
                                   base.memory_efficiency] + [1.0] * n,
                        bounds=([0.1, 0.05, 0.05] + [0.2] * n, [200.0, 1.0, 1.0] + [5.0] * n))
    fitted, scale = unpack(sol.x)
    rows = []
    for p in pts:
        pred = predict_point(cal, p, fitted, scale.get(p["gpu"], 1.0))
        rows.append({**p, "measured_ms": p["latency_ms"], "predicted_ms": pred,
                     "error": pred / p["latency_ms"] - 1,
                     "gpu_calibrated": p["gpu"] in scale})
    return fitted, scale, rows
