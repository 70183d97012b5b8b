"""Designs (b)-(d) of design.md §6: one shared sparse-MAC array for every product.

The per-operation-kind design (:mod:`fitformer.hardware.accelerator`, design (a)) gives
each kind of linear its own unit; the units run one after another, so most DSPs idle at
any time. Here every linear of every layer (q, k, v, attn_out, ffn_in, ffn_out, pooler,
classifier, lm_head) **and** the attention products QK^T and AV run in turn on one array
of ``P`` PEs x ``B`` banks x ``T`` token lanes, so all multipliers work on every product:

**(b) shared array.** PE ``p`` owns stripes ``p, p + P, ...`` of the matrix (HP's column
balance: every PE gets the same work; every row segment issues one weight per bank per
cycle, no bank conflict). A PE holds the ``c`` inputs of its current stripe for its ``T``
token lanes in a double-buffered register file, banked ``B`` ways; each multiplier picks
its column in its own bank through a ``c/B``:1 multiplexer, and all ``T`` lanes share
every weight read. A row segment's ``B x T`` products are summed per lane by the bank
adders into the PE's partial-sum tile.

**(c) row and token tiling.** Output rows are processed in tiles of ``R`` rows (a multiple
of ``r``; ``R >= M`` is untiled): a PE walks, tile by tile, the row segments of its
stripes that fall in the tile, accumulating into a partial-sum tile of ``R x T``
accumulators held in LUTRAM (``R <= 64``: a LUT6 is a 64 x 1 RAM, UG574) or BRAM, double
buffered. When every PE has finished a tile, the ``P`` tiles are merged by an adder tree
(one row of ``T`` lanes per cycle, depth ``ceil(log2 P)``) while the PEs go on with the
next tile; a PE may run at most one tile ahead of the slowest (two buffers). Work per PE
and tile comes from the mask's per-block cycles (:func:`fitformer.hardware.workload.
block_profile`); HP keeps its per-stripe balance, so only the per-tile spread can idle a
PE, and the recurrence below counts it. Counts-only workloads spread a stripe's work
evenly over the tiles (a lower bound; masks give the exact value). Tokens are tiled in
passes of ``T``.

**(d) streamed weights, double-buffered.** With weights off chip, each pass of ``T``
tokens streams the matrix's stored bits (values, in-bank offsets, block-row indices) from
DRAM into per-bank FIFOs while the previous chunk computes: a pass takes
``max(compute, bits / DRAM bits per cycle)`` (bound ``bandwidth`` when the DRAM sets it).

Per pass of a matrix, with ``w[p][i]`` the cycles of PE ``p`` in tile ``i``::

    start[p][i] = max(end[p][i - 1], merged[i - 2])      (two partial-sum buffers)
    end[p][i]   = start[p][i] + w[p][i]
    merged[i]   = max_p end[p][i] + R_i                  (R_i rows merged, one per cycle)
    compute     = merged[last] + mac_pipeline_cycles + ceil(log2 B) + ceil(log2 P)

``cycles = c + passes x max(compute, dram)`` (the first stripe's inputs load in ``c``
cycles; later loads overlap). For HP with untiled rows, ``compute = (S / P) K1 r k + M +
fill`` exactly.

**Attention on the array.** Per sequence and head, QK^T treats ``K_h`` (``kv x d_h``) as a
dense matrix of ``ceil(d_h / c)`` stripes and AV treats ``V_h^T`` (``d_h x kv``) as one of
``ceil(kv / c)`` stripes; the stripes of all heads are dealt to the ``P`` PEs, each row
segment takes ``c / B`` cycles, ``ceil(q / T)`` passes. The **non-linear unit** (``lanes``
lanes; exp for softmax, GELU, one reciprocal per row) runs the softmax of head ``h`` while
the array computes the products of head ``h + 1``: the attention of one sequence takes
``max(array, softmax) + fill``, the softmax being two passes (exp and sum, then scale) of
``ceil(H q_p kv / lanes)`` cycles per pass of ``q_p`` queries; the row maximum is taken
as the scores drain from the merge tree.
GELU is applied as ``ffn_in``'s rows drain (``max(linear, tokens x I / lanes)``). The add
& norm unit (``lanes``) runs after ``attn_out`` and ``ffn_out``: the residual add and
the statistics (sum, sum of squares) accumulate as the rows drain from the merge tree, so
one normalise pass over the tokens remains (``tokens x ceil(H / lanes)`` plus the pipeline).

Non-linear arithmetic (``DesignPoint.nonlinear``): ``fp32`` operators (DSP costs from
:data:`fitformer.hardware.resources.CONSTANTS`), or ``fx16``: exp, GELU and 1/sqrt by
table lookup with linear interpolation (NN-LUT, Yu et al., DAC 2022; integer-only
BERT non-linearities, I-BERT, Kim et al., ICML 2021), one multiplier per lane, the tables
in BRAM shared by two lanes, one pipelined reciprocal per row, a shallower pipeline.

Encoder-decoders use :class:`fitformer.hardware.accelerator.Inference` as design (a) does:
decoder linears run once per step on one token per sentence, attention of one query
against the ``t`` cached keys (step ``t``) and the ``seq_len`` source keys.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from fitformer.hardware.accelerator import (
    DesignPoint,
    Inference,
    Platform,
    Resources,
    Row,
    UnitResult,
    _header_bits_per_pe,
    _log2ceil,
    _offset_bits,
    assemble,
    embedding_unit,
    top_unit,
    weight_bits,
)
from fitformer.hardware.resources import (
    Memory,
    MemorySpec,
    accumulator_bits,
    const,
    dsp_per_multiplier,
    memory,
    value_bits,
)
from fitformer.hardware.workload import MatrixWork, Workload

FAMILY = "shared"
LUTRAM_ROWS = 64


def row_tiles(M: int, R: int, r: int) -> tuple[int, list[int]]:
    """Design (c)'s row tiling of a matrix of ``M`` output rows with tile knob ``R`` and
    block height ``r``: ``(RT, rows)``, the rows per tile ``RT`` (a multiple of ``r``;
    ``R >= M`` is one tile of ``ceil(M / r) r`` rows) and the output rows of each tile
    (``min(RT, M - i RT)``, what the merge drains). The generated HLS tiles the same way
    (:mod:`fitformer.hls`)."""
    RT = max(r, (min(R, M) // r) * r) if M > R else math.ceil(M / r) * r
    tiles = math.ceil(math.ceil(M / r) / (RT // r))
    return RT, [min(RT, M - i * RT) for i in range(tiles)]


def tile_work(m: MatrixWork, P: int, R: int, r: int) -> np.ndarray:
    """Cycles ``w[p][i]`` of PE ``p`` in row tile ``i`` (float64 ``(P, tiles)``): the
    sum over the PE's stripes ``p, p + P, ...`` of the per-block cycles of the tile's
    block rows (:func:`row_tiles`). The generated HLS PE's COMPUTE loop runs this many
    iterations per pass (tests/hls)."""
    M = m.shape[0]
    S = m.stripes
    R, _ = row_tiles(M, R, r)
    block_rows = math.ceil(M / r)
    per_tile = R // r
    tiles = math.ceil(block_rows / per_tile)
    if m.block_cycles is not None:
        bc = np.zeros((tiles * per_tile, S), dtype=np.float64)
        bc[:block_rows] = m.block_cycles
        by_tile = bc.reshape(tiles, per_tile, S).sum(axis=1)            # (tiles, S)
    else:  # counts only: a stripe's work spread evenly over the tiles
        by_tile = np.repeat(m.stripe_cycles[None, :].astype(np.float64) / tiles, tiles, 0)
    return by_tile.T.reshape(S // P, P, tiles).sum(axis=0)              # (P, tiles)


def tiled_compute_cycles(w: np.ndarray, rows_per_tile: list[int]) -> float:
    """The tile recurrence of the module docstring: cycles from the first tile's start to
    the last tile's merge, given per-PE, per-tile work ``w`` (``(P, tiles)``)."""
    P, tiles = w.shape
    end = np.zeros(P)
    merged: list[float] = []
    for i in range(tiles):
        gate = merged[i - 2] if i >= 2 else 0.0
        end = np.maximum(end, gate) + w[:, i]
        merged.append(float(end.max()) + rows_per_tile[i])
    return merged[-1] if merged else 0.0


@lru_cache(maxsize=65536)
def _matrix_compute(key: int, m_ref: tuple, P: int, R: int, r: int, B: int) -> float:
    """Compute cycles of one pass without fill (the tile recurrence), memoised by matrix
    identity and knobs."""
    m: MatrixWork = m_ref[0]
    w = tile_work(m, P, R, r)
    _, rows = row_tiles(m.shape[0], R, r)
    return tiled_compute_cycles(w, rows)


class _Ref(tuple):
    """A hashable holder of a matrix (identity hashing for the memo)."""

    def __hash__(self):
        return id(self[0])

    def __eq__(self, other):
        return isinstance(other, _Ref) and self[0] is other[0]


def matrix_cycles(m: MatrixWork, knobs: dict, wl: Workload, design: DesignPoint,
                  plat: Platform, n_tokens: int) -> tuple[int, str]:
    """``(cycles, bound)`` of one use of a linear on the array over ``n_tokens`` tokens."""
    P, T, R = knobs["P"], knobs["T"], knobs["R"]
    r, c = wl.block
    B = wl.banks
    compute = _matrix_compute(id(m), _Ref((m,)), P, R, r, B)
    fill = int(const("mac_pipeline_cycles")) + _log2ceil(B) + _log2ceil(P)
    compute = math.ceil(compute) + fill
    passes = math.ceil(n_tokens / T)
    dram = 0
    if not design.weights_on_chip:
        dram = math.ceil(weight_bits(m, design.precision, c, B, r) / plat.dram_bits_per_cycle)
    per_pass = max(compute, dram)
    return c + passes * per_pass, "bandwidth" if dram > compute else "compute"


def attention_terms(q: int, kv: int, knobs: dict, nl_lanes: int, wl: Workload
                    ) -> dict[str, int]:
    """The loop terms of one sequence's multi-head attention (cycles, no fills): ``qk`` and
    ``av`` on the array, ``softmax`` on the non-linear unit (module docstring). Per pass of
    ``q_p <= T`` queries: QK^T deals the ``H ceil(d_h / c)`` stripes of the keys to the
    ``P`` PEs, ``ceil(H ceil(d_h / c) / P) x kv x c/B`` cycles; AV deals the
    ``H ceil(kv / c)`` stripes of ``V^T``, ``ceil(H ceil(kv / c) / P) x d_h x c/B``; the
    softmax's two passes (exp and sum, then scale) each take ``ceil(H q_p kv / lanes)``.
    These are the trip counts of the generated HLS loops QK, AV, EXP and SCALE
    (:mod:`fitformer.hls`)."""
    P, T = knobs["P"], knobs["T"]
    d = wl.dims
    _, c = wl.block
    B = wl.banks
    seg = math.ceil(c / B)
    passes = math.ceil(q / T)
    qk = passes * math.ceil(d.heads * math.ceil(d.head_dim / c) / P) * kv * seg
    av = passes * math.ceil(d.heads * math.ceil(kv / c) / P) * d.head_dim * seg
    per_pass = [min(T, q - i * T) for i in range(passes)]
    softmax = sum(2 * math.ceil(d.heads * qp * kv / nl_lanes) for qp in per_pass)
    return {"qk": qk, "av": av, "softmax": softmax}


def attention_cycles(q: int, kv: int, knobs: dict, nl_lanes: int, wl: Workload,
                     nonlinear: str) -> tuple[int, int]:
    """``(cycles, array cycles)`` of one sequence's multi-head attention: ``q`` queries
    against ``kv`` keys, every head, products on the array overlapped with the softmax on
    the non-linear unit (module docstring, :func:`attention_terms`)."""
    t = attention_terms(q, kv, knobs, nl_lanes, wl)
    fill = (int(const("mac_pipeline_cycles")) + _log2ceil(wl.banks)
            + _log2ceil(knobs["P"]) + 3 * nonlinear_latency(nonlinear))
    return max(t["qk"] + t["av"], t["softmax"]) + fill, t["qk"] + t["av"]


def nonlinear_latency(nonlinear: str) -> int:
    """Pipeline depth of one non-linear operator (cycles)."""
    return int(const("fp32_op_latency") if nonlinear == "fp32" else const("fx16_op_latency"))


def _norm_cycles(lanes: int, hidden: int, tokens: int, nonlinear: str) -> int:
    """Residual add and the statistics are accumulated as the rows drain from the merge
    tree (hidden); one normalise pass over the tokens remains, plus the pipeline."""
    return tokens * math.ceil(hidden / lanes) + 3 * nonlinear_latency(nonlinear)


def array_unit(wl: Workload, design: DesignPoint, plat: Platform, inf: Inference
               ) -> UnitResult:
    """The shared array: a row per linear use (pooler, classifier and lm_head included)
    and one attention row per layer and stack; resources of the array (multipliers,
    partial-sum tiles, input register files, adders, weight memories or FIFOs)."""
    knobs = design.knobs["array"]
    P, T, R = knobs["P"], knobs["T"], knobs["R"]
    nl = design.knobs["nonlinear"]["lanes"]
    norm_lanes = design.knobs["add_norm"]["lanes"]
    d = wl.dims
    r, c = wl.block
    B = wl.banks
    prec = design.precision
    vbits, acc = value_bits(prec), accumulator_bits(prec)
    rows: list[Row] = []
    for m in wl.matrices:
        n, uses = inf.linear_use(m)
        cyc, bound = matrix_cycles(m, knobs, wl, design, plat, n)
        if m.role == "ffn_in":          # GELU on the draining rows
            cyc = max(cyc, math.ceil(n * m.shape[0] / nl) + nonlinear_latency(design.nonlinear))
        if m.role == "pooler":          # tanh on the non-linear lanes
            cyc += math.ceil(inf.batch * m.shape[0] / nl)
        if m.role == "lm_head":         # greedy argmax over the vocabulary
            cyc += n * math.ceil(m.shape[0] / norm_lanes)
        rows.append(Row(m.role, m.layer, cyc * uses, bound, m.stack))
    S = inf.seq_len
    enc, _ = attention_cycles(S, S, knobs, nl, wl, design.nonlinear)
    rows += [Row("attention", layer, inf.batch * enc, "compute") for layer in range(d.layers)]
    steps = inf.tgt_len if d.is_seq2seq else 0
    for layer in range(d.decoder_layers):
        masked = sum(attention_cycles(1, t, knobs, nl, wl, design.nonlinear)[0]
                     for t in range(1, steps + 1))
        cross = steps * attention_cycles(1, S, knobs, nl, wl, design.nonlinear)[0]
        rows.append(Row("attention", layer, inf.batch * masked, "compute", "decoder"))
        rows.append(Row("attention", layer, inf.batch * cross, "compute", "cross"))

    # Resources.
    mults = P * B * T
    dsp = mults * dsp_per_multiplier(prec, plat.dsp_type, T)
    Rt = max(r, (R // r) * r)
    Mmax = max(m.shape[0] for m in wl.matrices)
    psum_rows = min(Rt, math.ceil(Mmax / r) * r)
    mem = Memory()
    if psum_rows <= LUTRAM_ROWS:    # partial-sum tiles in LUTRAM, two per PE
        mem += Memory(lut=2 * P * T * acc * math.ceil(psum_rows / LUTRAM_ROWS))
    else:
        mem += memory(T * acc, 2 * psum_rows).times(P)
    specs: tuple[MemorySpec, ...] = ()
    off = max(_offset_bits(m, c, B) for m in wl.matrices)
    if design.weights_on_chip:
        depth = sum(_pe_depth(m, P) for m in wl.matrices)
        specs = (MemorySpec("array", vbits + off, depth, P * B),)
        hdr_w = max(_header_bits_per_pe(m, r, P)[0] for m in wl.matrices)
        hdr_d = sum(_header_bits_per_pe(m, r, P)[1] for m in wl.matrices)
        mem += memory(hdr_w, hdr_d).times(P)
    else:   # double-buffered stream FIFOs, one per bank of every PE
        mem += memory(vbits + off, 2 * int(const("stream_fifo_depth"))).times(P * B)
    mem += memory(acc, sum(m.shape[0] for m in wl.matrices))            # biases
    in_ff = P * 2 * c * T * vbits                                        # input registers
    mux_lut = mults * vbits * math.ceil(max(1, c // B) / 4)              # c/B : 1 muxes
    adders = P * T * (B - 1) + (P - 1) * T                               # bank + merge tree
    lut = int(const("unit_lut") + P * const("pe_lut") + mults * const("mul_lut") + mux_lut
              + adders * acc * const("adder_lut_per_bit"))
    ff = int(const("unit_ff") + P * const("pe_ff") + mults * const("mul_ff") + in_ff
             + adders * acc)
    return UnitResult("array", {"P": P, "T": T, "R": Rt}, Resources.of(mem, dsp, lut, ff),
                      rows, specs)


def _pe_depth(m: MatrixWork, P: int) -> int:
    """Entries per bank of the fullest PE (its weight memory depth for this matrix)."""
    if P == 1:
        return int(m.stripe_cycles.sum())
    return int(m.stripe_cycles.reshape(-1, P).sum(axis=0).max())


def nonlinear_unit(wl: Workload, design: DesignPoint, inf: Inference) -> UnitResult:
    """The non-linear unit (softmax exp/sum/scale, GELU, tanh; one reciprocal per row):
    resources only, its time is inside the array's attention and ffn_in rows."""
    lanes = design.knobs["nonlinear"]["lanes"]
    kv = max(inf.seq_len, inf.tgt_len)
    score_bits = 32 if design.nonlinear == "fp32" else 16
    mem = memory(lanes * score_bits, 2 * math.ceil(kv * max(1, inf.seq_len) / lanes))
    if design.nonlinear == "fx16":     # exp and GELU tables, one per two lanes each
        mem += memory(16, int(const("fx16_table_entries"))).times(2 * math.ceil(lanes / 2))
    if design.nonlinear == "fp32":
        per_lane_dsp = const("fp32_exp_dsp") + const("fp32_add_dsp") + const("fp32_mul_dsp")
        per_lane_lut, per_lane_ff = 3 * const("fp32_op_lut"), 3 * const("fp32_op_ff")
        recip_dsp = const("fp32_mul_dsp")
    else:
        per_lane_dsp = const("fx16_nonlinear_dsp")
        per_lane_lut, per_lane_ff = const("fx16_nonlinear_lut"), const("fx16_nonlinear_ff")
        recip_dsp = 0
    dsp = lanes * per_lane_dsp + recip_dsp
    lut = int(const("unit_lut") + lanes * per_lane_lut + const("reciprocal_lut"))
    ff = int(const("unit_ff") + lanes * per_lane_ff)
    return UnitResult("nonlinear", {"lanes": lanes}, Resources.of(mem, dsp, lut, ff), [])


def norm_unit(wl: Workload, design: DesignPoint, inf: Inference) -> UnitResult:
    """Residual add and layer norm (``lanes`` lanes): after every attn_out and ffn_out,
    the embedding's norm, final norms of pre-norm stacks; decoder steps on one token per
    sentence."""
    V = design.knobs["add_norm"]["lanes"]
    d = wl.dims
    nl = design.nonlinear
    cyc = _norm_cycles(V, d.hidden, inf.tokens, nl)
    rows = [Row(f"add_norm.{i}", layer, cyc, "compute")
            for layer in range(d.layers) for i in (1, 2)]
    steps = inf.tgt_len if d.is_seq2seq else 0
    step = _norm_cycles(V, d.hidden, inf.batch, nl)
    rows += [Row(f"add_norm.{i}", layer, steps * step, "compute", "decoder")
             for layer in range(d.decoder_layers) for i in (1, 2, 3)]
    if d.final_norm:
        rows.append(Row("add_norm.final", None, cyc, "compute"))
        if d.is_seq2seq:
            rows.append(Row("add_norm.final", None, steps * step, "compute", "decoder"))
    if nl == "fp32":
        dsp = V * 2 * (const("fp32_add_dsp") + const("fp32_mul_dsp")) + const("fp32_exp_dsp")
        lut = int(const("unit_lut") + (4 * V + 1) * const("fp32_op_lut"))
        ff = int(const("unit_ff") + (4 * V + 1) * const("fp32_op_ff"))
        pbits = 32
    else:
        dsp = V * const("fx16_nonlinear_dsp") + 1
        lut = int(const("unit_lut") + V * const("fx16_nonlinear_lut") + const("reciprocal_lut"))
        ff = int(const("unit_ff") + V * const("fx16_nonlinear_ff"))
        pbits = 16
    n_norms = 2 * d.layers + 1 + 3 * d.decoder_layers + (1 if d.is_seq2seq else 0) \
        + (1 + d.is_seq2seq if d.final_norm else 0)
    mem = memory(V * pbits, 2 * n_norms * math.ceil(d.hidden / V))     # gamma, beta
    return UnitResult("add_norm", {"lanes": V}, Resources.of(mem, dsp, lut, ff), rows)


def estimate_shared(wl: Workload, design: DesignPoint, plat: Platform, inf: Inference):
    """The :class:`~fitformer.hardware.accelerator.Estimate` of a shared-array design.

    Raises:
        ValueError: ``P`` does not divide every matrix's stripe count, or ``R`` is not a
            positive multiple of the block height ``r``.
    """
    P, R = design.knobs["array"]["P"], design.knobs["array"]["R"]
    r = wl.block[0]
    if R < r or R % r:
        raise ValueError(f"row tile R={R} must be a positive multiple of r={r}")
    for m in wl.matrices:
        if m.stripes % P:
            raise ValueError(f"P={P} must divide the {m.stripes} stripes of {m.role}")
    # The embedding gather's layer norm runs on the norm unit's lanes.
    emb_design = DesignPoint(design.precision, design.weights_on_chip,
                             {"add_norm": design.knobs["add_norm"]})
    units = {"embedding": embedding_unit(wl, emb_design, plat, inf),
             "array": array_unit(wl, design, plat, inf),
             "nonlinear": nonlinear_unit(wl, design, inf),
             "add_norm": norm_unit(wl, design, inf),
             "top": top_unit(wl, design, inf)}
    return assemble(design, units, plat)


def shared_candidates(wl: Workload, plat: Platform, inf: Inference, precision: str
                      ) -> list[DesignPoint]:
    """Design points of the shared family worth evaluating at ``precision``: ``P`` among
    the divisors of every stripe count, ``T`` powers of two up to the tokens of a use,
    ``R`` of 64 rows (LUTRAM) up to untiled, non-linear lanes 8-128 (norm lanes the same,
    capped by the hidden size), weights on chip or streamed, fp32 or fx16 non-linear
    units. Designs that cannot fit by their multipliers alone are skipped."""
    from fitformer.hardware.accelerator import divisors

    g = 0
    for m in wl.matrices:
        g = math.gcd(g, m.stripes)
    r = wl.block[0]
    Mmax = max(m.shape[0] for m in wl.matrices)
    tokens = max(inf.tokens, inf.batch)
    ts = []
    t = 1
    while t < 2 * tokens:
        ts.append(t)
        t *= 2
    rs = sorted({max(r, (64 // r) * r), max(r, (128 // r) * r), math.ceil(Mmax / r) * r})
    dsp_avail = plat.available.get("dsp", 0)
    out = []
    for P in divisors(g):
        for T in ts:
            mults = P * wl.banks * T
            if mults * dsp_per_multiplier(precision, plat.dsp_type, T) > dsp_avail:
                continue
            for R in rs:
                for lanes in (8, 16, 32, 64, 128):
                    norm = max(v for v in divisors(wl.dims.hidden) if v <= lanes)
                    for on_chip in (True, False):
                        for nl in ("fx16", "fp32"):
                            out.append(DesignPoint(
                                precision, on_chip,
                                {"array": {"P": P, "T": T, "R": R},
                                 "nonlinear": {"lanes": lanes},
                                 "add_norm": {"lanes": norm}}, FAMILY, nl))
    return out
