"""The catalog-CPU back-end (a ``kind: cpu`` entry other than the host): a dense fp32
roofline per operation (design.md §6.8; ``method: "roofline"``)."""

from __future__ import annotations

from fitformer.errors import FitformerError
from fitformer.hardware.accelerator import RESOURCE_KEYS
from fitformer.hardware.backends import EstimateRequest, register, report_header
from fitformer.hardware.catalog import Device
from fitformer.hardware.report import LatencyReport
from fitformer.hardware.workload import Workload


def roofline_report(device: Device, wl: Workload, req: EstimateRequest) -> LatencyReport:
    """Dense roofline of a CPU (or any device given as peak and bandwidth) at fp32
    (Williams, Waterman & Patterson, "Roofline", CACM 2009): per operation
    ``max(FLOPs / peak_tflops, bytes / dram_gbytes_per_s)``, fp32 values (4 bytes). An
    encoder-decoder's decoder re-reads its weights at every one of the ``tgt_len`` steps
    (one token per sentence each), which makes decoding bandwidth-bound; the device's
    ``call_overhead_ms`` counts once for the encoder and once per decoder step (a
    host-driven loop: the next token is chosen on the host), the launches of the kernels
    inside one call are not modelled.

    Raises:
        FitformerError: the device has no ``peak_tflops`` or ``dram_gbytes_per_s``.
    """
    from fitformer.hardware.accelerator import Inference

    peak, bw = device.num("peak_tflops"), device.num("dram_gbytes_per_s")
    if not peak or not bw:
        raise FitformerError(f"device {device.id} needs peak_tflops and dram_gbytes_per_s "
                             "for the roofline; give them in a --devices file.")
    d = wl.dims
    batch, seq_len = req.batch, req.seq_len
    inf = Inference(batch, seq_len, req.tgt_len if d.is_seq2seq else 0)
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
    return LatencyReport.from_json({
        **report_header(device, wl, "roofline", req),
        "latency_ms": compute_ms + overhead, "compute_ms": compute_ms,
        "call_overhead_ms": overhead, "precision": "fp32", "clock_mhz": None,
        "resources": {k: None for k in RESOURCE_KEYS},
        "utilization": {k: None for k in RESOURCE_KEYS}, "fits": True,
        "weights_on_chip": None, "units": units})


@register("cpu")
def cpu_backend(device: Device, wl: Workload, req: EstimateRequest) -> LatencyReport:
    """A catalog CPU: :func:`roofline_report` (dense kernels: sparsity is not exploited)."""
    return roofline_report(device, wl, req)
