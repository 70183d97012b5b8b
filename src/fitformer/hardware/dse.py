"""Design-space exploration: the lowest-latency design point that fits a device
(design.md §6), over a family of designs.

**Family ``shared``** (designs (b)-(d), :mod:`fitformer.hardware.shared_array`): every
candidate of :func:`~fitformer.hardware.shared_array.shared_candidates` (array ``P``, ``T``,
row tile ``R``, non-linear and norm lanes, weights on chip or streamed, fp32 or fx16
non-linear units) is evaluated after a DSP pre-check; the fastest that fits wins, ties to
fewer DSPs.

**Family ``per_op``** (design (a), :mod:`fitformer.hardware.accelerator`): start from
the minimal design (one PE, one lane, one head instance, one norm lane per unit); then,
repeatedly, among every unit's next knob values (the next one or two ``P``
dividing its stripe counts, ``T`` doubled or quadrupled up to the token count, the next
``H_par`` dividing the head count, the next norm lane counts dividing the hidden size),
take the step with the largest latency saving per resource spent (the largest fraction of
any available resource it adds), as long as the design still fits; stop when no step saves
cycles and fits. This generalises the seed authors' resource scheduling (add parallelism
to the slowest unit): since the units run in sequence, a cycle saved anywhere counts the
same. Two searches run, one with the weights on chip and one with them streamed from DRAM
(re-read once per pass of ``T`` tokens); the faster design that fits wins.
Every precision the device offers is explored (or the pinned one), both families at each;
the fastest design wins, ties to fewer DSPs. ``families`` restricts the search (the
validation experiment compares them).

Results are cached in ``$FITFORMER_HOME/dse/<digest>.json`` by a digest of the device's
hardware figures (resources, shell, DSP type, bandwidth, clock, precisions; not its
price), the workload (masks, or pattern parameters and density), precision, batch size,
sequence length, clock, the model's constants and :data:`MODEL_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import math

from fitformer.errors import FitformerError
from fitformer.hardware.accelerator import (
    LINEAR_UNITS,
    UNITS,
    DesignPoint,
    Estimate,
    Inference,
    Platform,
    UnitResult,
    assemble,
    divisors,
    evaluate_unit,
    minimal_design,
    pe_choices,
    top_unit,
)
from fitformer.hardware.catalog import RESOURCE_KEYS, Device
from fitformer.hardware.resources import CONSTANTS
from fitformer.hardware.workload import Workload

FAMILIES = ("per_op", "shared")
MODEL_VERSION = 4  # bump when the analytical model's code changes: invalidates cached designs


def platform_of(device: Device, clock_mhz: float | None = None) -> Platform:
    """The figures of an FPGA ``device`` the model needs.

    Raises:
        FitformerError: not an FPGA, or a figure the model needs is unknown (the message
            names the field to give in a ``--devices`` file).
    """
    if device.kind != "fpga":
        raise FitformerError(f"device {device.id} is a {device.kind}; the accelerator model "
                             "is for FPGAs (GPUs and CPUs use the roofline or a measurement).")
    if clock_mhz is not None and (not math.isfinite(clock_mhz) or clock_mhz <= 0):
        raise FitformerError(f"--clock-mhz {clock_mhz} must be a positive number of MHz "
                             "(e.g. 200).")
    clock = clock_mhz if clock_mhz is not None else device.num("clock_mhz")
    needed = (("clock_mhz", clock), ("dram_gbytes_per_s", device.num("dram_gbytes_per_s")),
              ("dsp", device.num("dsp")), ("bram_18k", device.num("bram_18k")),
              ("lut", device.num("lut")), ("ff", device.num("ff")))
    missing = [f for f, v in needed if not v]
    if missing:
        hint = " (or --clock-mhz for the clock)" if "clock_mhz" in missing else ""
        raise FitformerError(f"device {device.id} has {', '.join(missing)} missing or 0; the "
                             f"accelerator model needs {'them' if len(missing) > 1 else 'it'}:"
                             f" give {'them' if len(missing) > 1 else 'it'} in a --devices "
                             f"file{hint}.")
    return Platform(device.num("dsp_type"), float(device.num("dram_gbytes_per_s")),
                    (device.num("uram") or 0) > 0, device.available(), float(clock))


def _next(values: list[int], current: int, steps: int = 2) -> list[int]:
    bigger = [v for v in values if v > current]
    return bigger[:steps]


def _candidates(unit: str, knobs: dict, wl: Workload, tokens: int, seq_len: int) -> list[dict]:
    if unit in LINEAR_UNITS:
        ts = [t for t in (2 * knobs["T"], 4 * knobs["T"]) if t <= max(1, 2 * tokens) and
              t // 2 < tokens]
        return ([{**knobs, "P": p} for p in _next(pe_choices(wl, unit), knobs["P"])]
                + [{**knobs, "T": t} for t in ts])
    if unit == "attention":
        ts = [t for t in (2 * knobs["T"], 4 * knobs["T"]) if t // 2 < seq_len]
        return ([{**knobs, "H_par": h} for h in _next(divisors(wl.dims.heads), knobs["H_par"])]
                + [{**knobs, "T": t} for t in ts])
    if unit == "add_norm":
        return [{"lanes": v} for v in _next(divisors(wl.dims.hidden), knobs["lanes"], 3)]
    return []


class _Explorer:
    """Evaluates designs unit by unit, re-using unchanged units."""

    def __init__(self, wl: Workload, plat: Platform, batch: int, seq_len: int,
                 tgt_len: int = 0):
        self.wl, self.plat, self.batch, self.seq_len = wl, plat, batch, seq_len
        self.inf = Inference(batch, seq_len, tgt_len if wl.dims.is_seq2seq else 0)
        self._memo: dict = {}

    def unit(self, unit: str, design: DesignPoint) -> UnitResult:
        key = (unit, design.precision, design.weights_on_chip,
               tuple(sorted(design.knobs.get(unit, {}).items())),
               design.knobs["add_norm"]["lanes"])
        if key not in self._memo:
            self._memo[key] = evaluate_unit(unit, self.wl, design, self.plat, self.inf)
        return self._memo[key]

    def estimate(self, design: DesignPoint) -> Estimate:
        if design.family == "shared":
            from fitformer.hardware.shared_array import estimate_shared

            return estimate_shared(self.wl, design, self.plat, self.inf)
        units = {u: self.unit(u, design) for u in UNITS}
        units["top"] = top_unit(self.wl, design, self.inf)
        return assemble(design, units, self.plat)

    def explore_shared(self, precision: str) -> Estimate | None:
        """The fastest fitting design of the shared family (``None`` if none fits)."""
        from fitformer.hardware.resources import const, dsp_per_multiplier
        from fitformer.hardware.shared_array import shared_candidates

        best = None
        avail_dsp = self.plat.available.get("dsp", 0)
        for design in shared_candidates(self.wl, self.plat, self.inf, precision):
            a = design.knobs["array"]
            lanes = design.knobs["nonlinear"]["lanes"] + design.knobs["add_norm"]["lanes"]
            per_lane = (const("fx16_nonlinear_dsp") if design.nonlinear == "fx16" else
                        const("fp32_exp_dsp") + const("fp32_add_dsp") + const("fp32_mul_dsp"))
            dsp = (a["P"] * self.wl.banks * a["T"]
                   * dsp_per_multiplier(precision, self.plat.dsp_type, a["T"]) + lanes * per_lane)
            if dsp > avail_dsp:
                continue
            est = self.estimate(design)
            if not self.fits(est):
                continue
            if best is None or (est.total_cycles, est.resources.dsp) < (
                    best.total_cycles, best.resources.dsp):
                best = est
        return best

    def fits(self, est: Estimate) -> bool:
        return est.resources.fits(self.plat.available)

    def cost(self, new: Estimate, old: Estimate) -> float:
        a, b = new.resources.as_dict(), old.resources.as_dict()
        avail = self.plat.available
        return max(((a[k] - b[k]) / avail[k] for k in RESOURCE_KEYS if avail[k] > 0),
                   default=0.0)

    def explore(self, precision: str, families: tuple[str, ...] = FAMILIES) -> Estimate:
        """The best design at ``precision``: for the per-op family weights on chip and
        weights streamed are both explored (streaming wins when large ``T`` amortises the
        DRAM traffic); the shared family is searched exhaustively."""
        found = []
        if "per_op" in families:
            found += [self._greedy(self.estimate(minimal_design(precision, on_chip)))
                      for on_chip in (True, False)]
        if "shared" in families:
            shared = self.explore_shared(precision)
            if shared is not None:
                found.append(shared)
        if not found:   # nothing of the shared family fits: its minimal streamed design
            from fitformer.hardware.shared_array import FAMILY

            found.append(self.estimate(DesignPoint(
                precision, False, {"array": {"P": 1, "T": 1, "R": 64},
                                   "nonlinear": {"lanes": 1}, "add_norm": {"lanes": 1}},
                FAMILY, "fx16")))
        fitting = [e for e in found if self.fits(e)] or [e for e in found
                                                         if not e.design.weights_on_chip]
        return min(fitting or found, key=lambda e: (e.total_cycles, e.resources.dsp,
                                                    not e.design.weights_on_chip))

    def _greedy(self, est: Estimate) -> Estimate:
        if not self.fits(est):
            return est
        tokens = self.batch * self.seq_len
        frozen: set[str] = set()
        while True:
            best, best_score = None, 0.0
            for unit in UNITS:
                if unit in frozen:
                    continue
                found = False
                for knobs in _candidates(unit, est.design.knobs.get(unit, {}), self.wl,
                                         tokens, self.seq_len):
                    cand = self.estimate(est.design.with_knobs(unit, knobs))
                    gain = est.total_cycles - cand.total_cycles
                    if gain <= 0 or not self.fits(cand):
                        continue
                    found = True
                    score = gain / max(self.cost(cand, est), 1e-6)
                    if score > best_score:
                        best, best_score = cand, score
                if not found:
                    frozen.add(unit)
            if best is None:
                return est
            est = best


def _cache_key(wl: Workload, device: Device, precision: str, batch: int, seq_len: int,
               clock: float, tgt_len: int = 0, families: tuple[str, ...] = FAMILIES) -> str:
    # Only what the design depends on: a new price or note must not invalidate designs.
    hw = {f: device.num(f) for f in ("dsp_type", "dsp", "bram_18k", "uram", "lut", "ff",
                                     "shell", "dram_gbytes_per_s", "clock_mhz")}
    obj = {"device": {"id": device.id, **hw, "precisions": device.precisions},
           "workload": wl.digest,
           "precision": precision, "batch": batch, "seq_len": seq_len, "clock": clock,
           "model_version": MODEL_VERSION, "families": list(families),
           "constants": {k: c.value for k, c in CONSTANTS.items()}}
    if wl.dims.is_seq2seq:
        obj["tgt_len"] = tgt_len
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


def explore(wl: Workload, device: Device, *, precision: str | None = None, batch: int = 1,
            seq_len: int = 128, clock_mhz: float | None = None,
            use_cache: bool = True, tgt_len: int = 0,
            families: tuple[str, ...] = FAMILIES) -> Estimate:
    """The lowest-latency design point of ``wl`` on ``device`` (module docstring).

    Args:
        precision: ``fx16`` or ``fx8`` to pin; ``None`` explores the device's precisions.
        batch: sequences per inference (>= 1); seq_len: tokens per sequence (>= 1; the
            source tokens of an encoder-decoder). tgt_len: decoder steps of an
            encoder-decoder (>= 1; ignored for encoders).
        clock_mhz: overrides the device clock.
        use_cache: read and write ``$FITFORMER_HOME/dse``.
        families: the design families to search (``per_op``, ``shared``).

    Returns:
        the best :class:`Estimate`; ``fits`` may be false when even the minimal design
        does not fit (the estimate is then that of the minimal streamed design).

    Raises:
        FitformerError: bad batch/seq_len, a precision the device does not offer, or a
            device the model cannot size (:func:`platform_of`).
    """
    from fitformer.paths import dse_dir

    if batch < 1 or seq_len < 1:
        raise FitformerError(f"--batch-size {batch} and --seq-len {seq_len} must be >= 1.")
    plat = platform_of(device, clock_mhz)
    offered = [p for p in device.precisions if p in ("fx16", "fx8")]
    if precision is not None:
        if precision not in offered:
            raise FitformerError(f"--precision {precision}: device {device.id} offers "
                                 f"{', '.join(offered) or 'no fixed-point precision'}.")
        offered = [precision]
    if not offered:
        raise FitformerError(f"device {device.id} lists no fixed-point precision (fx16, fx8).")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise FitformerError(f"design families {list(families)}: choose from "
                             f"{', '.join(FAMILIES)}.")
    wl.dims.check_seq_len(seq_len, tgt_len if wl.dims.is_seq2seq else 0)
    explorer = _Explorer(wl, plat, batch, seq_len, tgt_len)
    results = []
    for prec in offered:
        key = _cache_key(wl, device, prec, batch, seq_len, plat.clock_mhz, tgt_len, families)
        path = dse_dir() / f"{key}.json"
        est = None
        if use_cache and path.is_file():
            try:
                saved = json.loads(path.read_text())
                est = explorer.estimate(DesignPoint(
                    prec, saved["weights_on_chip"], saved["knobs"],
                    saved.get("family", "per_op"), saved.get("nonlinear", "fp32")))
            except (ValueError, KeyError, TypeError):
                est = None          # a corrupt cache entry is recomputed
        if est is None:
            est = explorer.explore(prec, tuple(families))
            if use_cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(est.design.as_json()))
                tmp.replace(path)
        results.append(est)
    fitting = [e for e in results if explorer.fits(e)] or results
    return min(fitting, key=lambda e: (e.total_cycles, e.resources.dsp,
                                       -math.inf if e.design.precision == "fx16" else 0))


def estimate_point(wl: Workload, design: DesignPoint, plat: Platform, batch: int,
                   seq_len: int, tgt_len: int = 0) -> Estimate:
    """The estimate of one given design point, of either family."""
    return _Explorer(wl, plat, batch, seq_len, tgt_len).estimate(design)
