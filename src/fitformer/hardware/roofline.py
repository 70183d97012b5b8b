"""The device roofline of an FPGA design point (design.md §6): the bound no design beats.

``roofline_ms = max(MACs / (DSP x MACs per DSP x f), weight bytes / DRAM bandwidth)``
(Williams, Waterman & Patterson, "Roofline", CACM 2009), with

* ``MACs``: every product of one inference that the workload keeps: each linear's kept
  weights times the tokens it sees (uses included), plus the attention products QK^T and
  AV (dense);
* ``DSP``: the device's DSPs left after the shell; ``MACs per DSP``: 2 at fx8 on DSP48E2
  (two multiplications sharing an operand, Xilinx WP486, 2017), else 1;
* ``f``: the design's clock;
* ``weight bytes``: the stored weights with their in-bank offsets and block-row indices
  (:func:`fitformer.hardware.accelerator.weight_bits`), read once.

Every FPGA estimate reports its ratio to this bound (``roofline_ratio``).
"""

from __future__ import annotations

from fitformer.hardware.accelerator import Inference, weight_bits
from fitformer.hardware.workload import Workload


def inference_macs(wl: Workload, batch: int, seq_len: int, tgt_len: int = 0) -> int:
    """Multiply-accumulates of one inference (module docstring): kept weights x tokens for
    every linear, plus QK^T and AV of every attention (encoder, decoder self- and
    cross-attention over the decoder steps)."""
    d = wl.dims
    inf = Inference(batch, seq_len, tgt_len if d.is_seq2seq else 0)
    macs = 0
    for m in wl.matrices:
        n, uses = inf.linear_use(m)
        macs += uses * n * m.nnz
    macs += d.layers * batch * 2 * seq_len * seq_len * d.hidden
    steps = inf.tgt_len
    if steps:
        macs += d.decoder_layers * batch * 2 * d.hidden * (steps * (steps + 1) // 2
                                                           + steps * seq_len)
    return int(macs)


def stored_weight_bytes(wl: Workload, precision: str) -> float:
    """Bytes of every matrix as the accelerator stores it (values, offsets, indices)."""
    r, c = wl.block
    return sum(weight_bits(m, precision, c, wl.banks, r) for m in wl.matrices) / 8


def macs_per_dsp(precision: str, dsp_type: str | None) -> int:
    """2 for fx8 on DSP48E2 (WP486), else 1."""
    return 2 if precision == "fx8" and (dsp_type or "").upper() == "DSP48E2" else 1


def fpga_roofline(wl: Workload, *, dsp: float, dsp_type: str | None,
                  dram_gbytes_per_s: float, clock_mhz: float, precision: str,
                  batch: int, seq_len: int, tgt_len: int = 0) -> dict:
    """The roofline of ``wl`` on a device with these figures.

    Returns:
        ``{"macs", "weight_bytes", "compute_ms", "memory_ms", "roofline_ms", "bound"}``.
    """
    macs = inference_macs(wl, batch, seq_len, tgt_len)
    nbytes = stored_weight_bytes(wl, precision)
    compute_ms = macs / (max(dsp, 1) * macs_per_dsp(precision, dsp_type) * clock_mhz * 1e3)
    memory_ms = nbytes / (dram_gbytes_per_s * 1e6)
    return {"macs": macs, "weight_bytes": nbytes, "compute_ms": compute_ms,
            "memory_ms": memory_ms, "roofline_ms": max(compute_ms, memory_ms),
            "bound": "compute" if compute_ms >= memory_ms else "bandwidth"}
