"""Cycle-level simulator of one sparse linear unit running one real mask (design.md §6).

What it models that the analytical formula does not:

* **Bank-port rule**, cycle by cycle. A PE walks its row segments (stripes ``p, p + P, ...``,
  rows in order, empty segments skipped). A segment's kept weights are stored
  bank-interleaved (entry ``j`` of bank 0, of bank 1, ..., then entry ``j + 1``: the HP
  format's order, the best order for any mask). Each cycle the PE issues, in storage order,
  the longest prefix of the pending weights that reads every input bank at most once, up
  to ``B`` weights (in-order issue). An issue cut short by a second read of one bank is a
  **bank conflict**: the multipliers left without work that cycle count as
  ``bank_conflict`` slots. Multipliers left without work because the segment has no more
  weights count as ``imbalance_idle``, and so do all ``B`` multipliers of a PE that has
  finished while another PE of the unit still works. HP issues exactly ``B`` weights, one
  per bank, every cycle: zero of both.
* **Accumulator read-after-write hazards**: a segment ends with a read-modify-write of its
  row's partial sum; the next write of the same row by the same PE must wait
  ``accumulator_latency_cycles`` (assumed: BRAM read 2 + add 1 + write 1); the wait stalls
  the PE (``raw_hazard``, ``B`` slots per cycle).
* **Reduction**: the ``P`` partial-sum buffers merged ``B`` rows per cycle through an
  adder tree of depth ``ceil(log2 P)``, overlapped with the next pass (as in the formula).
* **DRAM bursts** when weights stream: the unit's weight bits arrive in bursts of
  ``dram_burst_bytes`` at the device bandwidth after a first-word latency; a pass cannot
  finish before its last burst (``dram_wait``).

Stalls are reported in multiplier slots and, divided by the ``P * B`` multipliers, in
cycles, so that ``compute cycles = useful / (P * B) + sum of stall cycles`` for a pass.

**Shared-array designs** (family ``shared``, :mod:`fitformer.hardware.shared_array`): a PE
walks its row segments tile by tile (``R`` output rows), stripe-major inside a tile, with
the same bank-port rule and accumulator hazards; tiles are gated by the two partial-sum
buffers and merged ``one row per cycle`` (:func:`fitformer.hardware.shared_array.
tiled_compute_cycles`). A PE waiting for a buffer while another PE finishes an older tile
counts as ``tile_sync`` (HP balances whole stripes, not row tiles, so HP can show it;
``imbalance_idle`` stays for idleness inside a segment and at the end of a pass).
Token lanes share every weight read, so all ``T`` lanes run the same schedule: one pass is
simulated and the passes are pipelined as in the analytical model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from fitformer.hardware.accelerator import DesignPoint, Platform, _log2ceil, weight_bits
from fitformer.hardware.resources import Constant, const
from fitformer.hardware.workload import MatrixWork

SIM_CONSTANTS = {
    "accumulator_latency_cycles": Constant(4, "cycles", "assumed",
                                           "partial-sum read-modify-write latency"),
    "dram_burst_bytes": Constant(64, "bytes", "assumed", "one DRAM burst (AXI, 512 bits)"),
}
STALL_CAUSES = ("bank_conflict", "imbalance_idle", "raw_hazard", "dram_wait", "tile_sync")


ORDERS = ("interleaved", "column")


@cache
def issue_schedule(counts: tuple[int, ...], order: str = "interleaved"
                   ) -> tuple[int, int, int, int]:
    """Cycle-by-cycle in-order issue of one row segment (module docstring).

    Args:
        counts: kept weights per bank of the segment (length ``B``).
        order: storage order of the segment's weights: ``interleaved`` (bank by bank, entry
            by entry: the HP format, and the padded bank format the analytical model
            assumes for every mask) or ``column`` (ascending column, as CSR stores a row:
            a format that ignores banks).

    Returns:
        ``(cycles, useful, conflict_slots, idle_slots)`` with
        ``cycles * B == useful + conflict_slots + idle_slots``.
    """
    B = len(counts)
    if order == "interleaved":
        seq = [b for j in range(max(counts, default=0)) for b in range(B) if counts[b] > j]
    elif order == "column":
        seq = [b for b in range(B) for _ in range(counts[b])]
    else:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    pos, cycles, conflict, idle = 0, 0, 0, 0
    while pos < len(seq):
        used: set[int] = set()
        issued = 0
        while pos < len(seq) and issued < B and seq[pos] not in used:
            used.add(seq[pos])
            pos += 1
            issued += 1
        cycles += 1
        if pos < len(seq) and issued < B:
            conflict += B - issued        # cut short by a second read of one bank
        else:
            idle += B - issued            # the segment ran out of weights
    return cycles, len(seq), conflict, idle


@dataclass(frozen=True)
class PassResult:
    """One pass of ``T`` tokens through one matrix."""

    compute_cycles: int            # slowest PE, including RAW stalls, without fill
    pe_cycles: np.ndarray          # (P,) per PE
    useful: int                    # MAC slots doing real work (per lane)
    slots: dict                    # multiplier slots by stall cause


def _segment_table(mask: np.ndarray, c: int, banks: int, P: int, order: str) -> np.ndarray:
    """int64 ``(M, S, 4)``: per row segment ``(cycles, useful, conflict_slots, idle_slots)``
    of :func:`issue_schedule`, every distinct bank-count vector simulated once.

    Raises:
        ValueError: ``P`` does not divide the stripe count, or ``banks`` does not divide ``c``.
    """
    M, N = mask.shape
    S = math.ceil(N / c)
    if S % P or c % banks:
        raise ValueError(f"P={P} must divide the {S} stripes and B={banks} the width {c}")
    padded = np.zeros((M, S * c), dtype=bool)
    padded[:, :N] = mask
    per_bank = padded.reshape(M, S, banks, c // banks).sum(axis=3)        # (M, S, B)
    sigs, inverse = np.unique(per_bank.reshape(-1, banks), axis=0, return_inverse=True)
    table = np.array([issue_schedule(tuple(int(x) for x in s), order) for s in sigs],
                     dtype=np.int64)
    return table[inverse.reshape(-1)].reshape(M, S, 4)


def simulate_pass(mask: np.ndarray, c: int, banks: int, P: int,
                  order: str = "interleaved") -> PassResult:
    """Issue every row segment of ``mask`` (bool ``(M, N)``) on ``P`` PEs of ``banks``
    multipliers each, cycle by cycle per segment signature (:func:`issue_schedule`), with
    accumulator hazards per PE.

    Raises:
        ValueError: ``P`` does not divide the stripe count, or ``banks`` does not divide ``c``.
    """
    M, N = mask.shape
    S = math.ceil(N / c)
    seg = _segment_table(mask, c, banks, P, order)       # cycles, useful, conflict, idle
    cycles = seg[..., 0]                                 # (M, S)
    A = int(SIM_CONSTANTS["accumulator_latency_cycles"].value)
    pe_cycles = np.zeros(P, dtype=np.int64)
    raw = 0
    for p in range(P):
        # PE p's segments in issue order: stripe-major, rows ascending, empty ones skipped.
        cyc = cycles[:, p::P].T.reshape(-1)                                # (S/P * M,)
        rows = np.tile(np.arange(M), S // P)
        keep = cyc > 0
        cyc, rows = cyc[keep], rows[keep]
        ends = np.cumsum(cyc)
        stall = _raw_stalls(rows, ends, A)
        raw += stall
        pe_cycles[p] = int(ends[-1]) + stall if ends.size else 0
    slots = {"bank_conflict": int(seg[..., 2].sum()),
             "imbalance_idle": int(seg[..., 3].sum()) + int((pe_cycles.max() - pe_cycles).sum())
             * banks, "raw_hazard": raw * banks, "dram_wait": 0, "tile_sync": 0}
    return PassResult(int(pe_cycles.max()), pe_cycles, int(seg[..., 1].sum()), slots)


def simulate_tiled_pass(mask: np.ndarray, r: int, c: int, banks: int, P: int, R: int,
                        order: str = "interleaved") -> PassResult:
    """One pass of the shared array over ``mask`` (bool ``(M, N)``) with row tiles of
    ``R`` rows (module docstring): per PE and tile, its segments issued cycle by cycle with
    accumulator hazards; tiles gated by two partial-sum buffers and merged one row per
    cycle. ``compute_cycles`` is the merge of the last tile (no fill).

    Raises:
        ValueError: ``P`` does not divide the stripe count, or ``banks`` does not divide ``c``.
    """
    M, N = mask.shape
    S = math.ceil(N / c)
    seg = _segment_table(mask, c, banks, P, order)
    Rt = max(r, (min(R, M) // r) * r) if M > R else M
    tiles = math.ceil(M / Rt)
    cycles = seg[..., 0]
    A = int(SIM_CONSTANTS["accumulator_latency_cycles"].value)
    w = np.zeros((P, tiles), dtype=np.float64)
    raw = 0
    for p in range(P):
        for i in range(tiles):
            lo, hi = i * Rt, min(M, (i + 1) * Rt)
            cyc = cycles[lo:hi, p::P].T.reshape(-1)
            rows = np.tile(np.arange(lo, hi), S // P)
            keep = cyc > 0
            cyc, rows = cyc[keep], rows[keep]
            ends = np.cumsum(cyc)
            stall = _raw_stalls(rows, ends, A)
            raw += stall
            w[p, i] = (int(ends[-1]) if ends.size else 0) + stall
    rows_per_tile = [min(Rt, M - i * Rt) for i in range(tiles)]
    # The recurrence, tracking each PE's waits for a free buffer.
    end = np.zeros(P)
    merged: list[float] = []
    sync = 0.0
    for i in range(tiles):
        gate = merged[i - 2] if i >= 2 else 0.0
        start = np.maximum(end, gate)
        sync += float((start - end).sum())
        end = start + w[:, i]
        merged.append(float(end.max()) + rows_per_tile[i])
    tail = float((end.max() - end).sum())
    busy = w.sum(axis=1)
    unequal = float((busy.max() - busy).sum())       # PEs given less work in total
    total = int(round(merged[-1])) if merged else 0
    slots = {"bank_conflict": int(seg[..., 2].sum()),
             "imbalance_idle": int(seg[..., 3].sum()) + int(round(unequal)) * banks,
             "raw_hazard": raw * banks, "dram_wait": 0,
             "tile_sync": int(round(sync + tail - unequal)) * banks}
    return PassResult(total, w.sum(axis=1).astype(np.int64), int(seg[..., 1].sum()), slots)


def _raw_stalls(rows: np.ndarray, ends: np.ndarray, A: int) -> int:
    """Stall cycles a PE needs so that two writes of one row are ``A`` cycles apart.

    Stalls inserted before a segment delay every later one equally, so they can only
    widen later gaps; hazards are therefore resolved in order, each against the stall
    accumulated since the previous write of its row."""
    if rows.size < 2:
        return 0
    order = np.argsort(rows, kind="stable")
    same = rows[order][1:] == rows[order][:-1]
    prev, cur = order[:-1][same], order[1:][same]
    gap = ends[cur] - ends[prev]
    hazards = np.flatnonzero(gap < A)
    if hazards.size == 0:
        return 0
    # Resolve in issue order with the stalls added so far.
    events = sorted(zip(cur[hazards].tolist(), prev[hazards].tolist(),
                        gap[hazards].tolist(), strict=True))
    added_at: list[tuple[int, int]] = []       # (segment index, stall) in order
    total = 0
    for j, i, g in events:
        between = sum(s for idx, s in added_at if i < idx <= j)
        need = A - (g + between)
        if need > 0:
            added_at.append((j, need))
            total += need
    return total


@dataclass(frozen=True)
class LayerSimulation:
    """A layer's simulation, with the analytical estimate of the same design."""

    layer: str
    shape: tuple[int, int]
    P: int
    T: int
    banks: int
    passes: int
    cycles: int
    analytical_cycles: int
    stall_cycles: dict
    stall_slots: dict
    useful_slots: int
    multiplier_utilization: float
    pipeline_fill: int
    reduction: int
    compute_cycles_per_pass: int
    dram_cycles_per_pass: int

    def as_dict(self) -> dict:
        return {"layer": self.layer, "shape": list(self.shape), "parallelism":
                {"P": self.P, "T": self.T}, "banks": self.banks, "passes": self.passes,
                "cycles": self.cycles, "analytical_cycles": self.analytical_cycles,
                "ratio_simulated_to_analytical": self.cycles / self.analytical_cycles,
                "stalls": self.stall_cycles, "stall_slots": self.stall_slots,
                "useful_slots": self.useful_slots,
                "multiplier_utilization": self.multiplier_utilization,
                "pipeline_fill": self.pipeline_fill, "reduction": self.reduction,
                "compute_cycles_per_pass": self.compute_cycles_per_pass,
                "dram_cycles_per_pass": self.dram_cycles_per_pass}


def simulate_layer(name: str, mask: np.ndarray, work: MatrixWork, knobs: dict,
                   design: DesignPoint, plat: Platform, block: tuple[int, int], banks: int,
                   tokens: int, analytical_cycles: int, gelu: bool = False,
                   order: str = "interleaved", steps: int = 1) -> LayerSimulation:
    """Simulate one layer at one design point and compare with the analytical cycles.

    Args:
        mask: bool ``(M, N)``; work: its :class:`MatrixWork` (for the stored bits).
        knobs: the unit's ``{"P", "T"}``; tokens: tokens per use (batch x seq_len; one
            per sentence for a decoder step).
        analytical_cycles: the formula's cycles for this layer at the same design.
        steps: uses per inference (an encoder-decoder's decoder steps, each a separate
            run of the pipeline: a step needs the previous step's output).
    """
    r, c = block
    P, T = knobs["P"], knobs["T"]
    M, N = mask.shape
    shared = design.family == "shared"
    if shared:
        res = simulate_tiled_pass(mask, r, c, banks, P, knobs["R"], order)
        fill = int(const("mac_pipeline_cycles")) + _log2ceil(banks) + _log2ceil(P)
    else:
        res = simulate_pass(mask, c, banks, P, order)
        fill = int(const("mac_pipeline_cycles")) + _log2ceil(banks)
    compute = res.compute_cycles + fill
    slots = dict(res.slots)
    dram = 0
    if not design.weights_on_chip:
        bits = weight_bits(work, design.precision, c, banks, r)
        burst_bits = 8 * int(SIM_CONSTANTS["dram_burst_bytes"].value)
        bursts = math.ceil(bits / burst_bits)
        latency = math.ceil(const("dram_latency_ns") * plat.clock_mhz / 1e3)
        dram = latency + math.ceil(bursts * burst_bits / plat.dram_bits_per_cycle)
        if dram > compute:
            slots["dram_wait"] = (dram - compute) * P * banks
            compute = dram
    passes = math.ceil(tokens / T)
    if shared:    # merge inside the tiles; first stripe's inputs, then pipelined passes
        load, reduce = c, 0
        cycles = steps * (load + passes * compute)
    else:
        load = math.ceil(N / banks)
        reduce = math.ceil(M / banks) + _log2ceil(P) + (int(const("fp32_op_latency"))
                                                        if gelu else 0)
        cycles = steps * (load + compute + reduce + (passes - 1) * max(load, compute, reduce))
    per_pass_slots = P * banks
    runs = passes * steps
    stall_cycles = {k: slots[k] / per_pass_slots * runs for k in STALL_CAUSES}
    total_slots = (compute - fill) * per_pass_slots
    if shared:
        slots = {k: slots.get(k, 0) for k in STALL_CAUSES}
    return LayerSimulation(
        name, (M, N), P, T, banks, runs, int(cycles), int(analytical_cycles),
        stall_cycles, {k: v * runs for k, v in slots.items()}, res.useful * runs,
        res.useful / total_slots if total_slots else 0.0, fill * runs,
        reduce * runs, res.compute_cycles, dram)


def resolve_layer(name: str, masks: dict) -> str:
    """The mask name ``name`` refers to: itself, or the one name ending with ``.name``.

    Raises:
        FitformerError: no or several matches (the message lists candidates).
    """
    from fitformer.errors import FitformerError

    if name in masks:
        return name
    hits = [n for n in masks if n.endswith("." + name)]
    if len(hits) == 1:
        return hits[0]
    listed = ", ".join(hits[:4] or list(masks)[:6])
    raise FitformerError(f"--layer {name} {'is ambiguous' if hits else 'is not a pruned layer'}"
                         f"; e.g. {listed} (see `fitformer model show`).")


def simulate(device, wl, masks: dict[str, np.ndarray], layers: list[str] | None = None, *,
             batch: int = 1, seq_len: int = 128, precision: str | None = None,
             clock_mhz: float | None = None, use_cache: bool = True,
             order: str = "interleaved", design_workload=None, tgt_len: int = 0,
             families: tuple[str, ...] | None = None) -> dict:
    """Simulate layers of a model at the design point the DSE chooses for ``wl`` on
    ``device`` (an FPGA), next to the analytical model of the same design.

    Args:
        masks: bool ``(M, N)`` masks by module name (the real structure to run).
        batch, seq_len, tgt_len: the inference (``tgt_len``: decoder steps of an
            encoder-decoder; its decoder layers run once per step on one token per
            sentence).
        layers: module names to simulate (default: every mask).
        order: storage order of every segment (:func:`issue_schedule`).
        design_workload: explore the design for this workload instead of ``wl`` (to run
            other patterns' masks on HP's design: "the same PE design"); the analytical
            cycles are then those of ``wl`` at that design.

    Returns:
        ``{"device", "precision", "weights_on_chip", "design", "layers": [...]}``; with one
        layer, its keys (``cycles``, ``stalls``, ``ratio_simulated_to_analytical``, ...)
        also at the top level.

    Raises:
        FitformerError: an unknown layer name (the message lists the names), or as
            :func:`fitformer.hardware.dse.explore`.
    """
    from fitformer.hardware.accelerator import LINEAR_UNITS, Inference
    from fitformer.hardware.dse import explore, platform_of
    from fitformer.models.layers import layer_index, role_of, stack_of

    names = [resolve_layer(n, masks) for n in layers] if layers else list(masks)
    from fitformer.hardware.dse import FAMILIES

    est = explore(design_workload or wl, device, precision=precision, batch=batch,
                  seq_len=seq_len, clock_mhz=clock_mhz, use_cache=use_cache, tgt_len=tgt_len,
                  families=families or FAMILIES)
    plat = platform_of(device, clock_mhz)
    if design_workload is not None:
        from fitformer.hardware.dse import estimate_point

        est = estimate_point(wl, est.design, plat, batch, seq_len, tgt_len)
    shared = est.design.family == "shared"
    inf = Inference(batch, seq_len, tgt_len if wl.dims.is_seq2seq else 0)
    unit_of = {role: unit for unit, roles in LINEAR_UNITS.items() for role in roles}
    out = []
    for name in names:
        role, layer, stack = role_of(name), layer_index(name), stack_of(name)
        if wl.dims.is_seq2seq and role == "classifier":
            role = "lm_head"
        unit = "array" if shared else unit_of[role]
        analytical = next(row.cycles for row in est.units[unit].rows
                          if row.label == role and row.layer == layer and row.stack == stack)
        work = wl.matrix(role, layer, stack)
        n, steps = inf.linear_use(work)
        if shared and role == "ffn_in":   # GELU overlaps the drain: compare the linear
            from fitformer.hardware.shared_array import matrix_cycles

            analytical = steps * matrix_cycles(work, est.design.knobs["array"], wl,
                                               est.design, plat, n)[0]
        sim = simulate_layer(name, masks[name], work, est.design.knobs[unit], est.design,
                             plat, wl.block, wl.banks, n, analytical, gelu=unit == "ffn_in",
                             order=order, steps=steps)
        out.append({**sim.as_dict(), "unit": unit, "stack": stack})
    rep = {"device": device.id, "precision": est.design.precision,
           "fits": est.resources.fits(plat.available),
           "weights_on_chip": est.design.weights_on_chip, "clock_mhz": est.clock_mhz,
           "design": est.design.knobs, "family": est.design.family,
           "pattern": wl.pattern, "batch_size": batch,
           "seq_len": seq_len, "tgt_len": inf.tgt_len or None, "order": order,
           "accumulator_latency_cycles": SIM_CONSTANTS["accumulator_latency_cycles"].value,
           "layers": out}
    if len(out) == 1:
        rep.update({k: v for k, v in out[0].items() if k != "layer"} | {"layer": names[0]})
    return rep
