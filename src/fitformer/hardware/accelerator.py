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

Resources: multipliers x :func:`dsp_per_multiplier`; memories by
:func:`fitformer.hardware.resources.memory`; LUT/FF from :data:`CONSTANTS`. A ``top`` row
holds the activation buffers (``tokens * (5 H + I)`` values: hidden state, Q, K, V, attention
context, FFN intermediate) and the DMA/host-interface constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

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
    "attn_out": ("attn_out", "pooler", "classifier"),
    "ffn_in": ("ffn_in",),
    "ffn_out": ("ffn_out",),
}
UNITS = ("embedding", "qkv", "attention", "attn_out", "add_norm", "ffn_in", "ffn_out")
RESOURCE_KEYS = ("dsp", "bram_18k", "uram", "lut", "ff")


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
        precision: ``fx16`` or ``fx8``.
        weights_on_chip: weights held in BRAM/URAM (else streamed from DRAM per pass).
        knobs: per unit: linear units ``{"P", "T"}``, attention ``{"H_par", "T"}``,
            add_norm ``{"lanes"}``.
    """

    precision: str
    weights_on_chip: bool
    knobs: dict = field(default_factory=dict)

    def with_knobs(self, unit: str, knobs: dict) -> DesignPoint:
        return DesignPoint(self.precision, self.weights_on_chip, {**self.knobs, unit: knobs})


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
    rows: list  # [(label, layer, cycles, bound)]
    memories: tuple[MemorySpec, ...] = ()

    @cached_property
    def cycles(self) -> int:
        return int(sum(r[2] for r in self.rows))


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
                design: DesignPoint, plat: Platform, tokens: int, batch: int) -> UnitResult:
    """Cycles and resources of a sparse linear unit (module docstring)."""
    P, T = knobs["P"], knobs["T"]
    r, c = wl.block
    B = wl.banks
    prec = design.precision
    vbits, acc = value_bits(prec), accumulator_bits(prec)
    fill = int(const("mac_pipeline_cycles")) + _log2ceil(B)
    gelu = int(const("fp32_op_latency")) if unit == "ffn_in" else 0
    rows = []
    for m in matrices:
        M, N = m.shape
        n = batch if m.role in ("pooler", "classifier") else tokens
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
            cycles += batch * math.ceil(M / max(1, design.knobs["add_norm"]["lanes"]))
        rows.append((m.role, m.layer, cycles, bound))

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


def attention_unit(knobs: dict, wl: Workload, design: DesignPoint, plat: Platform,
                   seq_len: int, batch: int) -> UnitResult:
    """Cycles and resources of the attention unit (QK^T, softmax, AV; module docstring)."""
    Hp, T = knobs["H_par"], knobs["T"]
    d = wl.dims
    prec = design.precision
    vbits = value_bits(prec)
    fill = int(const("mac_pipeline_cycles")) + _log2ceil(d.head_dim)
    fp = int(const("fp32_op_latency"))
    sweep = seq_len * math.ceil(seq_len / T)
    per_head = 4 * sweep + 2 * fill + 3 * fp
    cycles = batch * math.ceil(d.heads / Hp) * per_head
    rows = [("attention", layer, cycles, "compute") for layer in range(d.layers)]
    mults = Hp * T * d.head_dim
    dsp = mults * dsp_per_multiplier(prec, plat.dsp_type, T)
    dsp += Hp * T * (const("fp32_exp_dsp") + const("fp32_add_dsp") + const("fp32_mul_dsp"))
    mem = Memory()
    mem += memory(d.head_dim * vbits, seq_len).times(2 * Hp)        # K and V of one head
    mem += memory(T * 32, seq_len).times(2 * Hp)                     # score rows, fp32, x2
    lut = int(const("unit_lut") + mults * const("mul_lut")
              + Hp * T * 3 * const("fp32_op_lut")
              + Hp * T * (d.head_dim - 1) * accumulator_bits(prec))
    ff = int(const("unit_ff") + mults * const("mul_ff") + Hp * T * 3 * const("fp32_op_ff"))
    return UnitResult("attention", {"H_par": Hp, "T": T}, Resources.of(mem, dsp, lut, ff), rows)


def norm_cycles(lanes: int, hidden: int, tokens: int) -> int:
    return tokens * 2 * math.ceil(hidden / lanes) + 3 * int(const("fp32_op_latency"))


def add_norm_unit(knobs: dict, wl: Workload, design: DesignPoint, plat: Platform,
                  tokens: int) -> UnitResult:
    """Cycles and resources of the add & layer-norm unit (two uses per layer)."""
    V = knobs["lanes"]
    d = wl.dims
    cyc = norm_cycles(V, d.hidden, tokens)
    rows = [(f"add_norm.{i}", layer, cyc, "compute")
            for layer in range(d.layers) for i in (1, 2)]
    dsp = V * 2 * (const("fp32_add_dsp") + const("fp32_mul_dsp")) + const("fp32_exp_dsp")
    n_norms = 2 * d.layers + 1
    mem = memory(V * 32, 2 * n_norms * math.ceil(d.hidden / V))     # gamma, beta (fp32)
    lut = int(const("unit_lut") + (4 * V + 1) * const("fp32_op_lut"))
    ff = int(const("unit_ff") + (4 * V + 1) * const("fp32_op_ff"))
    return UnitResult("add_norm", {"lanes": V}, Resources.of(mem, dsp, lut, ff), rows)


def embedding_unit(wl: Workload, design: DesignPoint, plat: Platform, tokens: int) -> UnitResult:
    """The embedding gather from DRAM and its layer norm (on the add & norm unit)."""
    d = wl.dims
    row_bytes = d.hidden * value_bits(design.precision) / 8
    ns = (tokens * 3 * row_bytes / plat.dram_gbytes_per_s
          + math.ceil(3 * tokens / const("dram_outstanding")) * const("dram_latency_ns"))
    gather = math.ceil(ns * plat.clock_mhz / 1e3)
    norm = norm_cycles(design.knobs["add_norm"]["lanes"], d.hidden, tokens)
    lut = int(const("unit_lut") + d.hidden * 0)
    rows = [("embedding", None, gather + norm, "bandwidth" if gather > norm else "compute")]
    return UnitResult("embedding", {}, Resources(0, 0, 0, lut, int(const("unit_ff"))), rows)


def top_unit(wl: Workload, design: DesignPoint, tokens: int) -> UnitResult:
    """Activation buffers (placed with the weights) and the DMA/host-interface constants."""
    d = wl.dims
    values = tokens * (5 * d.hidden + d.intermediate)
    spec = MemorySpec("top", value_bits(design.precision), values, 1)
    res = Resources(0, int(const("top_bram_18k")), 0, int(const("top_lut")),
                    int(const("top_ff")))
    return UnitResult("top", {}, res, [], (spec,))


def evaluate_unit(unit: str, wl: Workload, design: DesignPoint, plat: Platform,
                  batch: int, seq_len: int) -> UnitResult:
    tokens = batch * seq_len
    if unit in LINEAR_UNITS:
        return linear_unit(unit, wl.by_role(*LINEAR_UNITS[unit]), design.knobs[unit], wl,
                           design, plat, tokens, batch)
    if unit == "attention":
        return attention_unit(design.knobs["attention"], wl, design, plat, seq_len, batch)
    if unit == "add_norm":
        return add_norm_unit(design.knobs["add_norm"], wl, design, plat, tokens)
    if unit == "embedding":
        return embedding_unit(wl, design, plat, tokens)
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
                    seq_len: int) -> Estimate:
    """Latency and resources of one design point.

    Args:
        wl: the workload; design: the knobs; plat: the device's figures.
        batch: sequences per inference; seq_len: tokens per sequence.

    Raises:
        ValueError: a knob ``P`` that does not divide a matrix's stripe count (the DSE only
            proposes divisors).
    """
    units = {u: evaluate_unit(u, wl, design, plat, batch, seq_len) for u in UNITS}
    units["top"] = top_unit(wl, design, batch * seq_len)
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
            out.append({"unit": u.unit, "layer": None, "parallelism": {}, **res,
                        "cycles": 0, "latency_ms": 0.0, "bound": None})
        for label, layer, cycles, bound in u.rows:
            hosted = label in ("pooler", "classifier")
            row = {"unit": label if hosted else u.unit, "layer": layer,
                   "parallelism": u.parallelism,
                   **({k: 0 for k in RESOURCE_KEYS} if hosted else res),
                   "cycles": int(cycles), "latency_ms": cycles / (est.clock_mhz * 1e3),
                   "bound": bound}
            if hosted:
                row["runs_on"] = u.unit
            out.append(row)
    return out
