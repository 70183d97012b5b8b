"""Analytical latency and resource model of the HP accelerator (design.md §6).

One hardware unit per operation kind, reused by every encoder layer in turn; its
resources count once, its latency once per use. Units of one layer run in sequence; the
latency of one inference is the sum over the ``L`` layers of

    qkv (q, k, v in turn) + attention + attn_out + add_norm + ffn_in (with GELU) + ffn_out
    + add_norm

plus the embedding gather (with its layer norm), the pooler and the classifier (both run on
the ``attn_out`` unit, the pooler's tanh on the add & norm lanes) and the device's
``call_overhead_ms``.

**Sparse linear unit** (``P`` PEs, ``T`` token lanes, ``B`` banks): a weight matrix is
processed in ``passes = ceil(tokens / T)`` passes of ``T`` tokens; each pass is a three-stage
pipeline (double-buffered between stages):

* load: the ``T`` input rows enter the PEs' banked input buffers, ``B`` values per cycle:
  ``ceil(N / B)`` cycles;
* compute: PE ``p`` owns stripes ``p, p + P, ...`` and spends
  ``sum(stripe_cycles[p::P])`` cycles on them (:mod:`fitformer.hardware.workload`); the
  stage takes the slowest PE plus the pipeline fill ``mac_pipeline_cycles + ceil(log2 B)``;
  with weights streamed from DRAM it takes at least the matrix's bits over the bandwidth;
* reduce: the ``P`` partial-sum buffers (partitioned ``B`` ways) are merged ``B`` rows per
  cycle by an adder tree of depth ``ceil(log2 P)``: ``ceil(M / B) + ceil(log2 P)`` cycles
  (plus the GELU pipeline for ``ffn_in``).

``cycles = load + compute + reduce + (passes - 1) * max(load, compute, reduce)``.
For HP, ``compute = (S / P) * K1 * r * k + fill`` exactly: every PE and every bank is
equally loaded. Bound: ``bandwidth`` when the DRAM time sets the compute stage, else
``compute``.

**Attention unit** (``H_par`` head instances, ``T`` query lanes): an instance holds one MAC
array of ``T x head_dim`` multipliers used by QK^T and then AV, and ``T`` fp32 softmax lanes.
Per head and sequence: QK^T ``seq * ceil(seq / T)`` cycles, softmax two passes (exp and
sum, then scale) ``2 * seq * ceil(seq / T)``, AV ``seq * ceil(seq / T)``, plus fills;
``ceil(heads / H_par)`` rounds per sequence, sequences in turn.

**Add & norm unit** (``lanes`` fp32 lanes): residual add with the statistics pass, then the
normalisation pass: ``2 * ceil(H / lanes)`` cycles per token plus fills.

**Embedding**: three rows (word, position, token type) of ``H`` values per token gathered
from DRAM: bytes over the bandwidth plus the first-word latency of each burst with
``dram_outstanding`` bursts in flight; then the layer norm on the add & norm unit.

**Encoder-decoders** (translation; ``dims.decoder_layers > 0``): one inference is one batch
of sentences of ``seq_len`` source tokens (``--src-len``) translated into ``tgt_len``
target tokens (``--tgt-len``), greedy. The encoder runs as above over the source; the
cross-attention keys and values of every decoder layer are computed once from the
encoder's output (``batch x seq_len`` tokens on the qkv unit, stack ``cross``); then
``tgt_len`` decoder steps each run, per decoder layer: q, k, v of the new token (one token
per sentence on the qkv unit), masked self-attention of that token against the key/value
cache of the ``t`` tokens so far (step ``t``), attn_out, add & norm, the cross-attention
query, cross-attention against the ``seq_len`` cached source keys/values, its output
projection, add & norm, ffn_in, ffn_out, add & norm; then the vocabulary projection
``lm_head`` (on the attn_out unit, like the classifier) and the greedy argmax over the
vocabulary on the add & norm lanes. Same units, reused by both stacks (the decoder must
have the encoder's width, heads and FFN size). The per-step linears see one token per
sentence, so lanes ``T`` beyond the batch idle there: a decoder step is latency-bound,
the reason autoregressive decoding is slow on every device. The key/value caches (self:
``L_dec x batch x tgt_len x 2H``, cross: ``L_dec x batch x seq_len x 2H`` values) live
in the activation buffers. Rows carry their ``stack`` (``encoder``, ``decoder``,
``cross``) and sum their cycles over the decoder steps.

Resources: multipliers x :func:`dsp_per_multiplier`; memories by
:func:`fitformer.hardware.resources.memory`; LUT/FF from :data:`CONSTANTS`. A ``top`` row
holds the activation buffers (``tokens * (5 H + I)`` values: hidden state, Q, K, V, attention
context, FFN intermediate) and the DMA/host-interface constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

from fitformer.hardware.resources import (
    Memory,
    MemorySpec,
    accumulator_bits,
    const,
    dsp_per_multiplier,
    memory,
    place_memories,
    value_bits,
)
from fitformer.hardware.workload import MatrixWork, Workload

LINEAR_UNITS: dict[str, tuple[str, ...]] = {
    "qkv": ("q", "k", "v"),
    "attn_out": ("attn_out", "pooler", "classifier", "lm_head"),
    "ffn_in": ("ffn_in",),
    "ffn_out": ("ffn_out",),
}
UNITS = ("embedding", "qkv", "attention", "attn_out", "add_norm", "ffn_in", "ffn_out")
RESOURCE_KEYS = ("dsp", "bram_18k", "uram", "lut", "ff")
HOSTED = ("pooler", "classifier", "lm_head")


class Row(NamedTuple):
    """One use of a unit: ``label`` (role or ``add_norm.i``), ``layer`` (``None`` outside
    the layer stacks), ``cycles`` (summed over the decoder steps), ``bound``
    (``compute`` / ``bandwidth``) and ``stack`` (``encoder``, ``decoder``, ``cross``)."""

    label: str
    layer: int | None
    cycles: int
    bound: str
    stack: str = "encoder"


@dataclass(frozen=True)
class Inference:
    """What one inference runs: ``batch`` sequences of ``seq_len`` tokens; for an
    encoder-decoder, ``seq_len`` source tokens and ``tgt_len`` decoder steps."""

    batch: int
    seq_len: int
    tgt_len: int = 0

    @property
    def tokens(self) -> int:
        """Encoder tokens (``batch x seq_len``)."""
        return self.batch * self.seq_len

    def linear_use(self, m: MatrixWork) -> tuple[int, int]:
        """``(tokens per use, uses)`` of a matrix: encoder matrices and the cross
        attention's k, v run once over the source; the decoder's matrices and ``lm_head``
        once per step on one token per sentence; pooler and classifier on one token per
        sequence."""
        if m.role in ("pooler", "classifier"):
            return self.batch, 1
        if m.stack == "encoder" or (m.stack == "cross" and m.role in ("k", "v")):
            return self.tokens, 1
        return self.batch, max(1, self.tgt_len)


@dataclass(frozen=True)
class Resources:
    """DSP, BRAM_18K, URAM, LUT, FF counts (DSP may be fractional: fx8 packing)."""

    dsp: float = 0.0
    bram_18k: int = 0
    uram: int = 0
    lut: int = 0
    ff: int = 0

    def __add__(self, o: Resources) -> Resources:
        return Resources(self.dsp + o.dsp, self.bram_18k + o.bram_18k, self.uram + o.uram,
                         self.lut + o.lut, self.ff + o.ff)

    def __sub__(self, o: Resources) -> Resources:
        return Resources(self.dsp - o.dsp, self.bram_18k - o.bram_18k, self.uram - o.uram,
                         self.lut - o.lut, self.ff - o.ff)

    @staticmethod
    def of(mem: Memory, dsp: float = 0.0, lut: int = 0, ff: int = 0) -> Resources:
        return Resources(dsp, mem.bram_18k, mem.uram, mem.lut + lut, ff)

    def as_dict(self) -> dict:
        return {"dsp": math.ceil(self.dsp), "bram_18k": self.bram_18k, "uram": self.uram,
                "lut": self.lut, "ff": self.ff}

    def fits(self, available: dict[str, float]) -> bool:
        return all(v <= available[k] + 1e-9 for k, v in self.as_dict().items())


@dataclass(frozen=True)
class Platform:
    """What a design point needs of its device: DSP type, DRAM bandwidth, URAM presence,
    resources available after the shell, clock."""

    dsp_type: str | None
    dram_gbytes_per_s: float
    has_uram: bool
    available: dict[str, float]
    clock_mhz: float

    @property
    def dram_bits_per_cycle(self) -> float:
        return self.dram_gbytes_per_s * 8e9 / (self.clock_mhz * 1e6)


@dataclass(frozen=True)
class DesignPoint:
    """One accelerator configuration.

    Attributes:
        precision: ``fx16`` or ``fx8`` (weights and activations of the products).
        weights_on_chip: weights held in BRAM/URAM (else streamed from DRAM).
        knobs: per unit. Family ``per_op``: linear units ``{"P", "T"}``, attention
            ``{"H_par", "T"}``, add_norm ``{"lanes"}``. Family ``shared``: ``array``
            ``{"P", "T", "R"}``, ``nonlinear`` ``{"lanes"}``, ``add_norm`` ``{"lanes"}``.
        family: ``per_op`` (design (a) of design.md §6: one unit per operation kind, this
            module) or ``shared`` (designs (b)-(d): one shared sparse-MAC array with row
            tiling and double-buffered weight streaming, :mod:`fitformer.hardware.
            shared_array`).
        nonlinear: arithmetic of softmax, layer norm and GELU: ``fp32`` or ``fx16``
            (integer polynomial approximations, I-BERT, Kim et al., ICML 2021).
    """

    precision: str
    weights_on_chip: bool
    knobs: dict = field(default_factory=dict)
    family: str = "per_op"
    nonlinear: str = "fp32"

    def with_knobs(self, unit: str, knobs: dict) -> DesignPoint:
        return DesignPoint(self.precision, self.weights_on_chip, {**self.knobs, unit: knobs},
                           self.family, self.nonlinear)

    def as_json(self) -> dict:
        return {"family": self.family, "precision": self.precision,
                "nonlinear": self.nonlinear, "weights_on_chip": self.weights_on_chip,
                "knobs": self.knobs}


def minimal_design(precision: str, weights_on_chip: bool = True) -> DesignPoint:
    knobs = {u: {"P": 1, "T": 1} for u in LINEAR_UNITS}
    knobs["attention"] = {"H_par": 1, "T": 1}
    knobs["add_norm"] = {"lanes": 1}
    return DesignPoint(precision, weights_on_chip, knobs)


@dataclass(frozen=True)
class UnitResult:
    """One unit: its resources (counted once; large memories to place separately) and its
    work per use (rows)."""

    unit: str
    parallelism: dict
    resources: Resources
    rows: list  # [Row]
    memories: tuple[MemorySpec, ...] = ()

    @cached_property
    def cycles(self) -> int:
        return int(sum(r.cycles for r in self.rows))


def _log2ceil(x: int) -> int:
    return max(0, math.ceil(math.log2(x))) if x > 1 else 0


def _offset_bits(m: MatrixWork, c: int, banks: int) -> int:
    w = c // banks
    if m.balanced and m.k_per_bank == w:
        return 0
    return _log2ceil(w)


def _header_bits_per_pe(m: MatrixWork, r: int, P: int) -> tuple[int, int]:
    """(width, depth) of the per-PE index memory: block-row indices for balanced matrices,
    ``row index + length`` per non-empty row segment otherwise."""
    M = m.shape[0]
    if m.balanced:
        if m.kept_blocks is None or m.kept_blocks * r >= M:
            return 0, 0
        return _log2ceil(math.ceil(M / r)), m.kept_blocks * math.ceil(m.stripes / P)
    segs = m.row_segments.reshape(-1, P).sum(axis=0).max() if P > 1 else m.row_segments.sum()
    return _log2ceil(M) + 3, int(segs)


def weight_bits(m: MatrixWork, precision: str, c: int, banks: int, r: int) -> int:
    """Bits of one matrix as stored by the unit: padded bank entries x (value + offset)
    plus indices (block-row indices, or row-segment headers for unbalanced masks)."""
    entries = int(m.stripe_cycles.sum()) * banks
    w = value_bits(precision) + _offset_bits(m, c, banks)
    hw, hd = _header_bits_per_pe(m, r, 1)
    return entries * w + hw * hd


def _pe_cycles(m: MatrixWork, P: int) -> int:
    """Cycles of the slowest PE on one pass (PE p owns stripes p, p + P, ...)."""
    if P == 1:
        return int(m.stripe_cycles.sum())
    return int(m.stripe_cycles.reshape(-1, P).sum(axis=0).max())


def linear_unit(unit: str, matrices: list[MatrixWork], knobs: dict, wl: Workload,
                design: DesignPoint, plat: Platform, inf: Inference) -> UnitResult:
    """Cycles and resources of a sparse linear unit (module docstring)."""
    P, T = knobs["P"], knobs["T"]
    r, c = wl.block
    B = wl.banks
    prec = design.precision
    vbits, acc = value_bits(prec), accumulator_bits(prec)
    fill = int(const("mac_pipeline_cycles")) + _log2ceil(B)
    gelu = int(const("fp32_op_latency")) if unit == "ffn_in" else 0
    rows = []
    lanes = max(1, design.knobs["add_norm"]["lanes"])
    for m in matrices:
        M, N = m.shape
        n, uses = inf.linear_use(m)
        passes = math.ceil(n / T)
        load = math.ceil(N / B)
        compute = _pe_cycles(m, P) + fill
        bound = "compute"
        if not design.weights_on_chip:
            dram = math.ceil(weight_bits(m, prec, c, B, r) / plat.dram_bits_per_cycle)
            if dram > compute:
                compute, bound = dram, "bandwidth"
        reduce = math.ceil(M / B) + _log2ceil(P) + gelu
        cycles = load + compute + reduce + (passes - 1) * max(load, compute, reduce)
        if m.role == "pooler":  # tanh on the add & norm unit's lanes
            cycles += inf.batch * math.ceil(M / lanes)
        if m.role == "lm_head":  # greedy argmax over the vocabulary, on the same lanes
            cycles += n * math.ceil(M / lanes)
        rows.append(Row(m.role, m.layer, cycles * uses, bound, m.stack))

    # Memories, sized for the largest matrix of the unit; weights for every matrix it runs.
    Mmax = max(m.shape[0] for m in matrices)
    Smax = max(m.stripes for m in matrices)
    off = max(_offset_bits(m, c, B) for m in matrices)
    mem = Memory()
    specs: tuple[MemorySpec, ...] = ()
    if design.weights_on_chip:
        depth = sum(_pe_cycles(m, P) for m in matrices)    # entries per bank of the fullest PE
        specs = (MemorySpec(unit, vbits + off, depth, P * B),)
        hdr_w = max(_header_bits_per_pe(m, r, P)[0] for m in matrices)
        hdr_d = sum(_header_bits_per_pe(m, r, P)[1] for m in matrices)
        mem += memory(hdr_w, hdr_d).times(P)
    else:  # stream FIFOs, one per bank of every PE
        mem += memory(vbits + off, int(const("stream_fifo_depth"))).times(P * B)
    mem += memory(T * vbits, 2 * math.ceil(Smax / P) * (c // B)).times(P * B)     # inputs
    mem += memory(T * acc, 2 * math.ceil(Mmax / B)).times(P * B)                  # psums
    mem += memory(acc, sum(m.shape[0] for m in matrices))                         # biases
    mults = P * B * T
    dsp = mults * dsp_per_multiplier(prec, plat.dsp_type, T)
    adders = P * T * (B - 1) + (P - 1) * T * B       # bank adder per lane + merge tree
    lut = int(const("unit_lut") + P * const("pe_lut") + mults * const("mul_lut")
              + adders * acc * const("adder_lut_per_bit"))
    ff = int(const("unit_ff") + P * const("pe_ff") + mults * const("mul_ff") + adders * acc)
    if unit == "ffn_in":
        n_gelu = B * T
        dsp += n_gelu * const("gelu_dsp")
        lut += int(n_gelu * const("fp32_op_lut"))
        ff += int(n_gelu * const("fp32_op_ff"))
    return UnitResult(unit, {"P": P, "T": T}, Resources.of(mem, dsp, lut, ff), rows, specs)


def attention_loop_cycles(q: int, kv: int, T: int) -> int:
    """Cycles of one head's attention without fills: ``4 kv ceil(q / T)`` (QK^T, the
    softmax's exp-and-sum and scale passes, AV: ``kv`` cycles each per pass of ``T``
    queries); the trip counts of the generated HLS loops QK, EXP, SCALE and AV."""
    return 4 * kv * math.ceil(q / T)


def attention_unit(knobs: dict, wl: Workload, design: DesignPoint, plat: Platform,
                   inf: Inference) -> UnitResult:
    """Cycles and resources of the attention unit (QK^T, softmax, AV; module docstring).
    One head of ``q`` queries against ``kv`` keys takes ``4 * kv * ceil(q / T)`` cycles
    (QK^T, the two softmax passes, AV) plus fills; an encoder layer has
    ``q = kv = seq_len``; decoder step ``t`` has ``q = 1`` against ``kv = t`` cached
    self-attention keys, then ``q = 1`` against the ``seq_len`` source keys."""
    Hp, T = knobs["H_par"], knobs["T"]
    d = wl.dims
    prec = design.precision
    vbits = value_bits(prec)
    fill = int(const("mac_pipeline_cycles")) + _log2ceil(d.head_dim)
    fp = int(const("fp32_op_latency"))
    rounds = inf.batch * math.ceil(d.heads / Hp)

    def per_head(q: int, kv: int) -> int:
        return attention_loop_cycles(q, kv, T) + 2 * fill + 3 * fp

    S = inf.seq_len
    enc = rounds * per_head(S, S)
    rows = [Row("attention", layer, enc, "compute") for layer in range(d.layers)]
    steps = inf.tgt_len if d.is_seq2seq else 0
    for layer in range(d.decoder_layers):
        masked = rounds * sum(per_head(1, t) for t in range(1, steps + 1))
        rows.append(Row("attention", layer, masked, "compute", "decoder"))
        rows.append(Row("attention", layer, rounds * steps * per_head(1, S), "compute",
                        "cross"))
    kv_len = max(S, steps)
    mults = Hp * T * d.head_dim
    dsp = mults * dsp_per_multiplier(prec, plat.dsp_type, T)
    dsp += Hp * T * (const("fp32_exp_dsp") + const("fp32_add_dsp") + const("fp32_mul_dsp"))
    mem = Memory()
    mem += memory(d.head_dim * vbits, kv_len).times(2 * Hp)         # K and V of one head
    mem += memory(T * 32, kv_len).times(2 * Hp)                      # score rows, fp32, x2
    lut = int(const("unit_lut") + mults * const("mul_lut")
              + Hp * T * 3 * const("fp32_op_lut")
              + Hp * T * (d.head_dim - 1) * accumulator_bits(prec))
    ff = int(const("unit_ff") + mults * const("mul_ff") + Hp * T * 3 * const("fp32_op_ff"))
    return UnitResult("attention", {"H_par": Hp, "T": T}, Resources.of(mem, dsp, lut, ff), rows)


def norm_cycles(lanes: int, hidden: int, tokens: int) -> int:
    return tokens * 2 * math.ceil(hidden / lanes) + 3 * int(const("fp32_op_latency"))


def add_norm_unit(knobs: dict, wl: Workload, design: DesignPoint, plat: Platform,
                  inf: Inference) -> UnitResult:
    """Cycles and resources of the add & layer-norm unit: two uses per encoder layer over
    the source tokens; three per decoder layer and step over one token per sentence; the
    final norm of each stack when the model has one (pre-norm)."""
    V = knobs["lanes"]
    d = wl.dims
    cyc = norm_cycles(V, d.hidden, inf.tokens)
    rows = [Row(f"add_norm.{i}", layer, cyc, "compute")
            for layer in range(d.layers) for i in (1, 2)]
    steps = inf.tgt_len if d.is_seq2seq else 0
    step = norm_cycles(V, d.hidden, inf.batch)
    rows += [Row(f"add_norm.{i}", layer, steps * step, "compute", "decoder")
             for layer in range(d.decoder_layers) for i in (1, 2, 3)]
    if d.final_norm:
        rows.append(Row("add_norm.final", None, cyc, "compute"))
        if d.is_seq2seq:
            rows.append(Row("add_norm.final", None, steps * step, "compute", "decoder"))
    dsp = V * 2 * (const("fp32_add_dsp") + const("fp32_mul_dsp")) + const("fp32_exp_dsp")
    n_norms = 2 * d.layers + 1 + 3 * d.decoder_layers + (1 if d.is_seq2seq else 0) \
        + (1 + d.is_seq2seq if d.final_norm else 0)
    mem = memory(V * 32, 2 * n_norms * math.ceil(d.hidden / V))     # gamma, beta (fp32)
    lut = int(const("unit_lut") + (4 * V + 1) * const("fp32_op_lut"))
    ff = int(const("unit_ff") + (4 * V + 1) * const("fp32_op_ff"))
    return UnitResult("add_norm", {"lanes": V}, Resources.of(mem, dsp, lut, ff), rows)


def _gather_cycles(plat: Platform, tokens: int, row_bytes: float, rows_per_token: int) -> int:
    ns = (tokens * rows_per_token * row_bytes / plat.dram_gbytes_per_s
          + math.ceil(rows_per_token * tokens / const("dram_outstanding"))
          * const("dram_latency_ns"))
    return math.ceil(ns * plat.clock_mhz / 1e3)


def embedding_unit(wl: Workload, design: DesignPoint, plat: Platform,
                   inf: Inference) -> UnitResult:
    """The embedding gather from DRAM and its layer norm (on the add & norm unit): three
    rows per token (word, position, token type) for a BERT-style encoder, two (word,
    position) for an encoder-decoder, whose decoder gathers one token per sentence and
    step."""
    d = wl.dims
    row_bytes = d.hidden * value_bits(design.precision) / 8
    per_token = 2 if d.is_seq2seq else 3
    lanes = design.knobs["add_norm"]["lanes"]
    gather = _gather_cycles(plat, inf.tokens, row_bytes, per_token)
    norm = norm_cycles(lanes, d.hidden, inf.tokens)
    rows = [Row("embedding", None, gather + norm, "bandwidth" if gather > norm else "compute")]
    if d.is_seq2seq:
        g = _gather_cycles(plat, inf.batch, row_bytes, per_token)
        n = norm_cycles(lanes, d.hidden, inf.batch)
        rows.append(Row("embedding", None, inf.tgt_len * (g + n),
                        "bandwidth" if g > n else "compute", "decoder"))
    lut = int(const("unit_lut"))
    return UnitResult("embedding", {}, Resources(0, 0, 0, lut, int(const("unit_ff"))), rows)


def top_unit(wl: Workload, design: DesignPoint, inf: Inference) -> UnitResult:
    """Activation buffers (placed with the weights) and the DMA/host-interface constants.
    Encoder: ``tokens * (5 H + I)`` values (hidden state, Q, K, V, attention context, FFN
    intermediate); an encoder-decoder adds the key/value caches (module docstring), one
    step's activations and the logits of one step."""
    d = wl.dims
    values = inf.tokens * (5 * d.hidden + d.intermediate)
    if d.is_seq2seq:
        values += 2 * d.hidden * d.decoder_layers * inf.batch * (inf.seq_len + inf.tgt_len)
        values += inf.batch * (5 * d.hidden + d.intermediate + d.vocab)
    spec = MemorySpec("top", value_bits(design.precision), values, 1)
    res = Resources(0, int(const("top_bram_18k")), 0, int(const("top_lut")),
                    int(const("top_ff")))
    return UnitResult("top", {}, res, [], (spec,))


def evaluate_unit(unit: str, wl: Workload, design: DesignPoint, plat: Platform,
                  inf: Inference) -> UnitResult:
    if unit in LINEAR_UNITS:
        return linear_unit(unit, wl.by_role(*LINEAR_UNITS[unit]), design.knobs[unit], wl,
                           design, plat, inf)
    if unit == "attention":
        return attention_unit(design.knobs["attention"], wl, design, plat, inf)
    if unit == "add_norm":
        return add_norm_unit(design.knobs["add_norm"], wl, design, plat, inf)
    if unit == "embedding":
        return embedding_unit(wl, design, plat, inf)
    raise ValueError(unit)


@dataclass(frozen=True)
class Estimate:
    """The estimate of one design point (latency, resources, per-unit rows)."""

    design: DesignPoint
    units: dict[str, UnitResult]
    placed: dict[str, Memory]
    clock_mhz: float

    def unit_resources(self, unit: str) -> Resources:
        """A unit's resources with its placed memories (weights, activation buffers)."""
        return self.units[unit].resources + Resources.of(self.placed.get(unit, Memory()))

    @cached_property
    def total_cycles(self) -> int:
        return sum(u.cycles for u in self.units.values())

    @property
    def compute_ms(self) -> float:
        return self.total_cycles / (self.clock_mhz * 1e3)

    @cached_property
    def resources(self) -> Resources:
        total = Resources()
        for u in self.units:
            total = total + self.unit_resources(u)
        return total


def estimate_design(wl: Workload, design: DesignPoint, plat: Platform, batch: int,
                    seq_len: int, tgt_len: int = 0) -> Estimate:
    """Latency and resources of one design point.

    Args:
        wl: the workload; design: the knobs; plat: the device's figures.
        batch: sequences per inference; seq_len: tokens per sequence (source tokens of an
            encoder-decoder); tgt_len: decoder steps (encoder-decoders only).

    Raises:
        ValueError: a knob ``P`` that does not divide a matrix's stripe count (the DSE only
            proposes divisors).
    """
    inf = Inference(batch, seq_len, tgt_len if wl.dims.is_seq2seq else 0)
    units = {u: evaluate_unit(u, wl, design, plat, inf) for u in UNITS}
    units["top"] = top_unit(wl, design, inf)
    return assemble(design, units, plat)


def assemble(design: DesignPoint, units: dict[str, UnitResult], plat: Platform) -> Estimate:
    """An :class:`Estimate` from evaluated units: places their large memories."""
    used_uram = sum(u.resources.uram for u in units.values())
    specs = [s for u in units.values() for s in u.memories]
    placed = place_memories(specs, plat.available.get("uram", 0) - used_uram
                            if plat.has_uram else 0)
    return Estimate(design, units, placed, plat.clock_mhz)


def divisors(n: int) -> list[int]:
    return [i for i in range(1, n + 1) if n % i == 0]


def pe_choices(wl: Workload, unit: str) -> list[int]:
    """``P`` values for a linear unit: divisors of every stripe count it runs."""
    g = 0
    for m in wl.by_role(*LINEAR_UNITS[unit]):
        g = math.gcd(g, m.stripes)
    return divisors(g)


def as_rows(est: Estimate) -> list[dict]:
    """The per-(unit, layer) rows of the JSON contract (design.md §6 / issue #5)."""
    out = []
    for u in est.units.values():
        res = est.unit_resources(u.unit).as_dict()
        if not u.rows:  # the top: activation buffers, DMA and host interface
            out.append({"unit": u.unit, "layer": None, "stack": None, "parallelism": {},
                        **res,
                        "cycles": 0, "latency_ms": 0.0, "bound": None})
        for label, layer, cycles, bound, stack in u.rows:
            hosted = label in HOSTED
            row = {"unit": label if hosted else u.unit, "op": label, "layer": layer,
                   "stack": stack, "parallelism": u.parallelism,
                   **({k: 0 for k in RESOURCE_KEYS} if hosted else res),
                   "cycles": int(cycles), "latency_ms": cycles / (est.clock_mhz * 1e3),
                   "bound": bound}
            if hosted:
                row["runs_on"] = u.unit
            out.append(row)
    return out
