"""The closed loop: the lowest-cost device whose latency meets LC and whose pruned model
meets AC (design.md §1, §2, §9).

Devices are walked in objective order (price or power, unknown last). For each device and
precision (an FPGA's fixed-point precisions, fp32 for CPUs and GPUs) the grid points are
tried in ascending sparsity: a point qualifies when its design fits the device, its
``latency_ms <= LC`` and its dev accuracy at that precision meets AC; the device is
feasible at the least such sparsity. Accuracy points are trained only when a priced
device's latency at that point meets LC (:class:`fitformer.select.profile.Profile`).
The first feasible device with a known objective value wins. Latency: the FPGA analytical
model at the DSE's best design (HP and cbb from their counts, other patterns from the
runs' masks), a dense roofline for catalog GPUs and CPUs (their dense kernels gain nothing
from sparsity, so they are evaluated at the dense point only), and a measurement on this
machine for the host CPU at every grid point, its pruned linears on the HP CPU kernel
(:mod:`fitformer.kernels.cpu`; the model pruned one shot to the point's pattern and
sparsity, which has the trained point's kept counts), measured before the query trains
anything where the points' structure allows it (:meth:`_Latency.premeasure_host`).
A device whose catalog figures are missing, 0 or implausible
(:meth:`fitformer.hardware.catalog.Device.problems`), or whose latency model refuses its
figures, gets an infeasible row (``incomplete_figures`` / ``implausible_figures``) that
names each problem, and the walk goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fitformer.errors import FitformerError
from fitformer.select.profile import GRID, Profile

DEFAULT_LATENCY_MS = 10.0
DEFAULT_MAX_ACCURACY_DROP = 0.05
DEFAULT_MAX_BLEU_DROP = 2.0       # BLEU points (sacrebleu's 0-100 scale)
DEFAULT_TGT_LEN = 32
REPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Constraints:
    """LC and AC (design.md §2).

    Attributes:
        latency_ms: LC, for one inference of ``batch_size`` x ``seq_len`` tokens (for
            translation: ``batch_size`` sentences of ``seq_len`` source tokens translated
            into ``tgt_len`` tokens).
        min_accuracy: absolute dev floor, in (0, ``scale_max``], or
        max_accuracy_drop: allowed drop below the dense fp32 dev score, [0, ``scale_max``).
        metric: the dev score AC applies to: ``accuracy`` or ``macro_f1`` (fractions,
            ``scale_max`` 1; the flags stay ``--min-accuracy`` / ``--max-accuracy-drop``)
            or ``bleu`` (sacrebleu's 0-100, ``scale_max`` 100; the flags are then
            ``--min-bleu`` / ``--max-bleu-drop``).
    """

    latency_ms: float = DEFAULT_LATENCY_MS
    batch_size: int = 1
    seq_len: int = 128
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    tgt_len: int = 0
    metric: str = "accuracy"

    @property
    def scale_max(self) -> float:
        return 100.0 if self.metric == "bleu" else 1.0

    @property
    def label(self) -> str:
        """How messages and reports name the metric: ``accuracy``, ``macro-F1``, ``BLEU``."""
        from fitformer.training.evaluation import METRIC_LABELS

        return METRIC_LABELS[self.metric]

    def check(self) -> Constraints:
        """The constraints with the default AC filled in.

        Raises:
            FitformerError: impossible values (before any work starts).
        """
        from dataclasses import replace

        lc = self.latency_ms
        bleu = self.metric == "bleu"
        lo, drop = ("--min-bleu", "--max-bleu-drop") if bleu else ("--min-accuracy",
                                                                    "--max-accuracy-drop")
        if lc is None or isinstance(lc, bool) or not math.isfinite(lc) or lc <= 0:
            raise FitformerError(f"--latency-ms {lc} must be a positive number of ms.")
        if self.min_accuracy is not None and self.max_accuracy_drop is not None:
            raise FitformerError(f"give {lo} or {drop}, not both.")
        of = "" if self.metric in ("accuracy", "bleu") else f" of dev {self.label}"
        if self.min_accuracy is not None and not 0 < self.min_accuracy <= self.scale_max:
            raise FitformerError(
                f"{lo} {self.min_accuracy} must be in (0, {self.scale_max:g}] "
                + ("(sacrebleu's 0-100 scale, e.g. 25)." if bleu
                   else f"(a fraction{of}, e.g. 0.80)."))
        if self.max_accuracy_drop is not None and \
                not 0 <= self.max_accuracy_drop < self.scale_max:
            raise FitformerError(
                f"{drop} {self.max_accuracy_drop} must be in [0, {self.scale_max:g}) "
                + ("(BLEU points, e.g. 2)." if bleu
                   else f"(a fraction{of}, e.g. 0.02 for two points)."))
        seq = "--src-len" if bleu else "--seq-len"
        if self.batch_size < 1 or self.seq_len < 1:
            raise FitformerError(f"--batch-size {self.batch_size} and {seq} "
                                 f"{self.seq_len} must be >= 1.")
        if bleu and self.tgt_len < 1:
            raise FitformerError(f"--tgt-len {self.tgt_len} must be >= 1 (target tokens "
                                 "decoded per sentence).")
        if self.min_accuracy is None and self.max_accuracy_drop is None:
            return replace(self, max_accuracy_drop=DEFAULT_MAX_BLEU_DROP if bleu
                           else DEFAULT_MAX_ACCURACY_DROP)
        return self

    def target(self, dense_dev: float) -> float:
        return (self.min_accuracy if self.min_accuracy is not None
                else dense_dev - self.max_accuracy_drop)

    def as_dict(self) -> dict:
        out = {"latency_ms": self.latency_ms, "batch_size": self.batch_size,
               "seq_len": self.seq_len}
        if self.metric == "bleu":
            out["tgt_len"] = self.tgt_len
        if self.min_accuracy is not None:
            out["min_accuracy"] = self.min_accuracy
        else:
            out["max_accuracy_drop"] = self.max_accuracy_drop
        return out


class _Latency:
    """Latency estimates per (device, precision, sparsity), computed once."""

    def __init__(self, profile: Profile, cons: Constraints, clock_mhz: float | None,
                 gpu_engine: str | None = None):
        self.profile, self.cons, self.clock = profile, cons, clock_mhz
        self.gpu_engine = gpu_engine
        self._wl: dict[float, object] = {}
        self._memo: dict = {}

    @property
    def model(self) -> str:
        """What the workloads and the host measurement are built from: the dense run when
        known (always for translation: the from-scratch model), else the base model."""
        p = self.profile
        return p.model if p.dense_dir is None else str(p.dense().run_dir)

    def workload(self, sparsity: float, train: bool):
        from fitformer.hardware.frontends import workload_from_pattern, workload_from_run
        from fitformer.hardware.workload import structure_from_counts

        if sparsity not in self._wl:
            p = self.profile
            if sparsity == 0.0 or structure_from_counts(p.pattern):
                self._wl[sparsity] = workload_from_pattern(
                    self.model,
                    pattern=p.pattern, sparsity=sparsity, block=p.block, banks=p.banks,
                    level2_density=p.level2_density, nm_m=p.nm_m)
            else:
                point = p.point(sparsity, train=train)
                if point is None:
                    return None
                self._wl[sparsity] = workload_from_run(point.run_dir)
        return self._wl[sparsity]

    def get(self, device, precision: str, sparsity: float, train: bool) -> dict | None:
        from fitformer.hardware.estimate import estimate

        kind_key = sparsity if _sparse_aware(device) else 0.0   # dense kernels elsewhere
        key = (device.id, precision, kind_key)
        if key not in self._memo:
            wl = self.workload(kind_key, train)
            if wl is None:
                return None
            try:
                self._memo[key] = estimate(
                    device, wl, batch=self.cons.batch_size, seq_len=self.cons.seq_len,
                    precision=precision if device.kind == "fpga" else None,
                    clock_mhz=self.clock if device.kind == "fpga" else None,
                    model=self.model, tgt_len=self.cons.tgt_len, gpu_engine=self.gpu_engine)
            except FitformerError as exc:
                if _is_host(device):        # a host measurement failing is a real error
                    raise
                raise _DeviceFigures(str(exc)) from None
        return self._memo[key]

    def premeasure_host(self, device) -> bool:
        """Measure the host CPU at every grid point whose structure is known without
        training (all points for stripe-balanced patterns such as HP and cbb, the dense
        point otherwise), so that the figures are not taken on a machine just loaded by
        training. Before the dense run exists a classifier is measured on its base model
        (the same architecture); a translation model only once its dense run exists.
        Returns whether it measured."""
        from fitformer.hardware.estimate import estimate
        from fitformer.hardware.frontends import workload_from_pattern
        from fitformer.hardware.workload import structure_from_counts

        p = self.profile
        if p.dense_dir is None and p.task == "translation":
            return False
        model = self.model
        for s in GRID:
            if s > 0 and not structure_from_counts(p.pattern):
                break
            key = (device.id, "fp32", s)
            if key in self._memo:
                continue
            wl = workload_from_pattern(model, pattern=p.pattern, sparsity=s, block=p.block,
                                       banks=p.banks, level2_density=p.level2_density,
                                       nm_m=p.nm_m)
            self._memo[key] = estimate(device, wl, batch=self.cons.batch_size,
                                       seq_len=self.cons.seq_len, model=model,
                                       tgt_len=self.cons.tgt_len)
        return True


def _check_above_majority(target: float, majority: float | None, cons: Constraints,
                          dense_dev: float | None = None) -> None:
    """Refuse an accuracy floor at or below the dev split's majority-class baseline in the
    metric (the majority-class rate for accuracy; for macro-F1 the macro-F1 of always
    answering the most frequent class): a model that always answers that class meets it
    (the majority-class rule, design.md §9).

    BLEU has no majority class; a BLEU floor at or below 0 (a drop as large as the dense
    model's BLEU) is refused instead: every output meets it.

    Raises:
        FitformerError: ``target <= majority`` (BLEU: ``target <= 0``); the message names
            the baseline and a floor that means something.
    """
    if cons.metric == "bleu":
        if target <= 0 and dense_dev is not None:
            fix = (f"give --max-bleu-drop below {dense_dev:.2f}" if dense_dev > 0 else
                   "the dense model translates nothing: train the default one (`fitformer "
                   "finetune --task translation --budget default`) or give --dense with a "
                   "working translation run")
            raise FitformerError(
                f"AC: --max-bleu-drop {cons.max_accuracy_drop:g} below the dense model's "
                f"dev BLEU {dense_dev:.2f} asks for dev BLEU >= {target:.2f}, which any "
                f"output meets (BLEU is at least 0); {fix}.")
        return
    if majority is None or target > majority + 1e-12:
        return
    how = (f"--min-accuracy {cons.min_accuracy:g}" if cons.min_accuracy is not None else
           f"--max-accuracy-drop {cons.max_accuracy_drop:g} below the dense model's "
           f"{dense_dev:.4f}")
    what = ("the majority-class rate" if cons.metric == "accuracy" else
            f"the majority-class baseline (the {cons.label} of always answering the most "
            "frequent class)")
    if dense_dev is not None and dense_dev > majority + 0.01:
        hint = f"--max-accuracy-drop {max(0.0, dense_dev - majority - 0.01):.2f} or less"
    elif majority < 1 - 0.0001:
        hint = f"--min-accuracy above {majority:.4f}"
    else:           # a dev split of one class: no floor can mean anything
        hint = "a dataset whose dev split has more than one class"
    raise FitformerError(
        f"AC: {how} asks for dev {cons.label} >= {target:.4f}, at or below {what} "
        f"{majority:.4f} of the dev split: a model that always answers the most frequent "
        f"class would meet it. Ask for more, e.g. {hint}.")


def _unmeasured_host_row(device, objective_field: str) -> dict:
    """The host CPU's row when it has no value for the objective and was not named in
    ``--only``: it can never be chosen, so it is not measured."""
    row = {"id": device.id, "name": device.name, "kind": device.kind,
           "price_usd": device.num("price_usd"), "power_w": device.num("power_w"),
           "feasible": False, "reason": _no_value_reason(objective_field), "curve": {},
           "would_pass_with": f"give {objective_field} for {device.id} in a --devices file "
                              f"(or name it in --only {device.id} to measure it anyway)"}
    row.update(dict.fromkeys(_POINT_FIELDS))
    return row


def _no_value_reason(objective_field: str) -> str:
    """The reason code of a device that has no value for the objective: ``no_price`` or
    ``no_power``."""
    return "no_price" if objective_field == "price_usd" else "no_power"


#: The fields of a device row that describe its chosen (or nearest-miss) point; ``None`` when
#: there is none.
_POINT_FIELDS = ("precision", "latency_ms", "compute_ms", "call_overhead_ms", "sparsity",
                 "hp_split", "accuracy_dev", "accuracy_test", "fits", "weights_on_chip",
                 "measurement")


class _DeviceFigures(Exception):
    """A catalog device's figures kept its latency model from running (the message says
    which); select reports it infeasible and goes on."""


def _is_host(device) -> bool:
    from fitformer.hardware.catalog import HOST_CPU_ID

    return device.id == HOST_CPU_ID


def _sparse_aware(device) -> bool:
    """Whether ``device``'s latency depends on sparsity, as its latency back-end says
    (``exploits_sparsity``): FPGAs (the accelerator model) and the host CPU (measured with
    the HP kernel)."""
    from fitformer.hardware.backends import backend_for

    return backend_for(device).exploits_sparsity


def _precisions(device, pinned: str | None) -> list[str]:
    from fitformer.hardware.backends import backend_for

    if not backend_for(device).pins_precision:
        return ["fp32"] if pinned in (None, "fp32") else []
    offered = [p for p in device.precisions if p in ("fx16", "fx8")]
    return [p for p in offered if pinned in (None, p)]


def evaluate_device(device, lat: _Latency, profile: Profile, cons: Constraints,
                    target: float, pinned: str | None, objective_field: str,
                    log: Callable[[str], None], may_train: bool = True) -> dict:
    """One device's row of the report: feasibility, the point chosen (or the nearest miss)
    and the reason. With ``may_train`` false only points already trained are used (a
    cheaper device already answers the query)."""
    priced = device.num(objective_field) is not None
    rows = []
    for prec in _precisions(device, pinned):
        points, found = [], False
        # Catalog CPUs and GPUs run dense kernels: pruning does not change their latency,
        # so only the dense point is evaluated there.
        for s in (GRID if _sparse_aware(device) else GRID[:1]):
            # After the least qualifying sparsity, only what is known fills the curve.
            train = may_train and priced and not found
            est = lat.get(device, prec, s, train=train)
            if est is None:
                continue
            meets_lc = est.fits and est.latency_ms <= cons.latency_ms
            point = profile.point(s, train=train and meets_lc)
            acc = None if point is None else point.accuracy
            collapsed = None if point is None else point.collapsed.get(prec)
            if meets_lc and acc is not None and acc["dev"][prec] >= target and not collapsed:
                found = True
            points.append({"sparsity": s, "estimate": est, "accuracy": acc,
                           "collapsed": collapsed,
                           "majority_rate_dev": None if point is None else point.majority_rate,
                           "majority_baseline_dev": None if point is None
                           else point.majority_baseline})
        rows.append((prec, points))
    return _decide(device, rows, cons, target, priced, objective_field, pinned,
                   train_hint=f"`{profile.train_command()}` trains them")


def _dev(acc: dict | None, prec: str) -> float | None:
    return None if acc is None else acc["dev"][prec]


def _decide(device, rows, cons: Constraints, target: float, priced: bool,
            objective_field: str, pinned: str | None = None, train_hint: str = "") -> dict:
    best = None      # (sparsity, latency, prec, point)
    for prec, points in rows:
        for p in points:
            e, a = p["estimate"], _dev(p["accuracy"], prec)
            if e.fits and e.latency_ms <= cons.latency_ms and a is not None \
                    and a >= target and not p.get("collapsed"):
                cand = (p["sparsity"], e.latency_ms, prec, p)
                if best is None or cand[:2] < best[:2]:
                    best = cand
                break
    curve = {prec: [{"sparsity": p["sparsity"], "latency_ms": p["estimate"].latency_ms,
                     "fits": p["estimate"].fits, "accuracy_dev": _dev(p["accuracy"], prec),
                     "majority_rate_dev": p.get("majority_rate_dev"),
                     "majority_baseline_dev": p.get("majority_baseline_dev"),
                     "collapsed": p.get("collapsed")}
                    for p in points] for prec, points in rows}
    if best is not None:
        reason = "ok" if priced else _no_value_reason(objective_field)
        prec, point = best[2], best[3]
        nearest = None
    else:
        reason, prec, point, nearest = _nearest_miss(rows, cons, target, device, pinned,
                                                     train_hint)
        if not priced:
            reason = _no_value_reason(objective_field)
    row = {"id": device.id, "name": device.name, "kind": device.kind,
           "price_usd": device.num("price_usd"), "power_w": device.num("power_w"),
           "feasible": best is not None and priced, "reason": reason, "curve": curve}
    if point is not None:
        e = point["estimate"]
        fits = e.fits          # a design that does not fit has no latency to show
        row.update({"precision": prec, "latency_ms": e.latency_ms if fits else None,
                    "compute_ms": e.compute_ms if fits else None,
                    "call_overhead_ms": e.call_overhead_ms if fits else None,
                    "sparsity": point["sparsity"], "hp_split": e.get("hp_split"),
                    "accuracy_dev": _dev(point["accuracy"], prec),
                    "accuracy_test": None if point["accuracy"] is None
                    else point["accuracy"]["test"][prec],
                    "fits": e.fits, "weights_on_chip": e.get("weights_on_chip"),
                    "method": e.method, "utilization": e.get("utilization"),
                    "design": e.get("design"), "design_family": e.get("design_family"),
                    "nonlinear": e.get("nonlinear"), "measurement": _measurement(e)})
    else:
        row.update(dict.fromkeys(_POINT_FIELDS))
    if not priced:
        row["would_pass_with"] = (f"give {objective_field} in a --devices file"
                                  + ("" if best is not None else f"; then also: {nearest}"))
    elif nearest:
        row["would_pass_with"] = nearest
    return row


def _measurement(est) -> dict | None:
    """How steady a measured (host CPU) figure is, for the row: load, spread, attempts."""
    if est.get("method") != "measured":
        return None
    return {k: est.get(k) for k in ("backend", "kernel_isa", "steady", "spread",
                                    "steady_rule", "load_avg_1min", "cpus", "attempts",
                                    "remeasured_from")}


def _figures_row(device, problems: list[dict], objective_field: str) -> dict:
    """The row of a device whose catalog figures keep it from being estimated: infeasible,
    naming every problem (``incomplete_figures`` when a figure is missing or 0 or no
    precision is listed, ``implausible_figures`` when a figure is out of bounds)."""
    missing = any(p["problem"] in ("missing", "no_precision") for p in problems)
    reason = "incomplete_figures" if missing else "implausible_figures"
    row = {"id": device.id, "name": device.name, "kind": device.kind,
           "price_usd": device.num("price_usd"), "power_w": device.num("power_w"),
           "feasible": False, "reason": reason, "curve": {},
           "problems": [p["message"] for p in problems],
           "would_pass_with": "fix in a --devices file: "
                              + "; ".join(p["message"] for p in problems)}
    row.update(dict.fromkeys(_POINT_FIELDS))
    return row


def _nearest_miss(rows, cons: Constraints, target: float, device=None,
                  pinned: str | None = None, train_hint: str = ""):
    """The reason a device fails and what would make it pass (``train_hint``: the command
    that trains points not trained yet)."""
    hint = f"; {train_hint}" if train_hint else ""
    fitting = [(prec, p) for prec, pts in rows for p in pts if p["estimate"].fits]
    if not fitting:
        allp = [(prec, p) for prec, pts in rows for p in pts]
        if not rows:
            offered = [] if device is None else list(device.precisions)
            if pinned is not None:
                return ("precision", None, None, f"it does not offer the pinned --precision "
                        f"{pinned} (it lists {', '.join(offered) or 'none'})")
            return ("incomplete_figures", None, None, "it lists no precision its latency "
                    "model runs (FPGAs: fx16, fx8); give precisions in a --devices file")
        if not allp:
            return ("accuracy", None, None, "no grid point could be evaluated yet (its "
                    f"points are not trained){hint}")
        def worst(t):
            util = t[1]["estimate"].get("utilization") or {}
            return max(((k, v) for k, v in util.items() if v is not None),
                       key=lambda kv: kv[1], default=("-", 0.0))

        prec, p = min(allp, key=lambda t: worst(t)[1])
        name, frac = worst((prec, p))
        return ("resources", prec, p, f"no design fits at any grid point (closest: sparsity "
                f"{p['sparsity']:g}, {prec}, {name} at {frac:.0%} of the device)")
    meets_lc = [(prec, p) for prec, p in fitting
                if p["estimate"].latency_ms <= cons.latency_ms]
    if not meets_lc:
        # The LC that would make it pass is that of its fastest point that also meets AC
        # (when accuracies are known); the fastest point alone may miss AC.
        good = [(prec, p) for prec, p in fitting if p["accuracy"] is not None
                and _dev(p["accuracy"], prec) >= target and not p.get("collapsed")]
        known = all(p["accuracy"] is not None for _, p in fitting)
        pool, what = (good, "its fastest point that meets AC") if good else \
            (fitting, "its fastest point; " + ("none of its points meets AC either" if known
                                              else "AC not known there yet"))
        prec, p = min(pool, key=lambda t: t[1]["estimate"].latency_ms)
        return ("latency", prec, p, f"LC >= {p['estimate'].latency_ms:.3g} ms ({what}: "
                f"sparsity {p['sparsity']:g}, {prec})")
    known = [(prec, p) for prec, p in meets_lc if p["accuracy"] is not None]
    if not known:
        prec, p = min(meets_lc, key=lambda t: t[1]["sparsity"])
        return "accuracy", prec, p, f"accuracy at its LC-meeting points not trained yet{hint}"
    prec, p = max(known, key=lambda t: _dev(t[1]["accuracy"], t[0]))
    a = _dev(p["accuracy"], prec)
    name = f"dev {cons.label}"
    return ("accuracy", prec, p, f"AC <= {a:.4f} {name} (best LC-meeting point: "
            f"sparsity {p['sparsity']:g}, {prec}; needs {target:.4f})")


@dataclass(frozen=True)
class SelectResult:
    """The outcome: the report (``report.json`` content), where it was written, and the
    exit code (0 = a device qualifies, 3 = none)."""

    report: dict
    out_dir: Path | None
    exit_code: int


def select(model: str = "default", dataset: str = "rotten-tomatoes", *,
           latency_ms: float = DEFAULT_LATENCY_MS, min_accuracy: float | None = None,
           max_accuracy_drop: float | None = None, batch_size: int = 1, seq_len: int = 128,
           precision: str | None = None, objective: str = "price",
           devices_file: str | Path | None = None, only: list[str] | None = None,
           pattern: str = "hp", level2_density: float | None = None,
           block: tuple[int, int] | None = None, banks: int = 4,
           nm_m: int | None = None,
           budget: str = "default",
           clock_mhz: float | None = None, out: str | Path | None = None,
           dense_dir: str | Path | None = None, task: str = "classification",
           min_bleu: float | None = None, max_bleu_drop: float | None = None,
           tgt_len: int | None = None, gpu_engine: str | None = None,
           text_column: str = "text", label_column: str = "label",
           metric: str | None = None, hls_sentences: int | None = None,
           log: Callable[[str], None] = print) -> SelectResult:
    """The best device for ``model`` on ``dataset`` under LC and AC (module docstring).

    Args:
        latency_ms: LC; min_accuracy / max_accuracy_drop: AC (default: drop 0.05), on
            the dev score in ``metric``.
        metric: ``accuracy`` (default) or ``macro_f1`` (macro-averaged F1, for imbalanced
            data; the majority-class baseline is then the macro-F1 of always answering the
            most frequent class); translation uses BLEU and takes no metric.
        batch_size, seq_len: the inference LC applies to (accuracy is measured at 64 tokens).
        precision: pin fp32, fx16 or fx8 (devices without it are skipped).
        objective: ``price`` or ``power``.
        gpu_engine: the inference engine GPUs are estimated with
            (:data:`fitformer.hardware.gpu.ENGINES`; default ``tensorrt-fp16``).
        devices_file, only: catalog merge file and id filter.
        pattern, level2_density, block, banks, nm_m: the pruning pattern of the profile
            (``nm_m``: the m of N:M, default 4; refused with another pattern).
        budget: ``tiny``, ``quick`` or ``default`` for the pruned points.
        out: folder for ``report.json``, the HTML report, plots and artifacts (default
            ``./fitformer-select``; ``out=False`` writes nothing). Files of an earlier
            report there are removed first; a ``model/`` folder that select did not write
            is refused (:mod:`fitformer.select.outdir`).
        dense_dir: the dense run (default: the budget's own dense fine-tune, design.md §9);
            it decides the model, so ``model`` must stay ``default`` beside it.
        text_column, label_column: columns of a local dataset file.
        hls_sentences: also write the Vitis HLS project of the answer into ``out/hls``
            (:func:`fitformer.hls.generate`, with this many real dev sentences in its
            testbench) when the chosen device is an FPGA running an HP-pruned
            classifier; otherwise the log says why none is written. ``None``: no project.
        task: ``classification`` or ``translation`` (Tatoeba en-fr, the from-scratch
            encoder-decoder; AC in BLEU: ``min_bleu`` or ``max_bleu_drop``, default drop 2
            points; ``seq_len`` is the source length, ``tgt_len`` the decoded tokens,
            default 32; ``report.json`` says ``"metric": {"name": "bleu",
            "scale_max": 100}``).

    Returns:
        :class:`SelectResult`.

    Raises:
        FitformerError: impossible inputs, before any training and before anything is
            written.
    """
    from fitformer.hardware.catalog import load_catalog, order_by_objective
    from fitformer.select.outdir import check_out_dir

    if task not in ("classification", "translation"):
        raise FitformerError(f"--task {task}: choose classification or translation.")
    translation = task == "translation"
    if translation and metric is not None:
        raise FitformerError(f"--metric {metric} is for classification; --task translation "
                             "measures dev BLEU (--min-bleu / --max-bleu-drop): drop --metric.")
    metric = metric or "accuracy"
    if translation:
        if min_accuracy is not None or max_accuracy_drop is not None:
            raise FitformerError("--task translation takes --min-bleu / --max-bleu-drop "
                                 "(BLEU 0-100), not --min-accuracy / --max-accuracy-drop.")
        if model != "default" and dense_dir is None:
            raise FitformerError("--task translation trains its own encoder-decoder from "
                                 "scratch; leave --model at default (--dense DIR takes "
                                 "another trained translation run).")
        if dataset == "rotten-tomatoes":
            dataset = "tatoeba-en-fr"
        min_accuracy, max_accuracy_drop = min_bleu, max_bleu_drop
        tgt_len = DEFAULT_TGT_LEN if tgt_len is None else tgt_len
    elif min_bleu is not None or max_bleu_drop is not None or tgt_len is not None:
        raise FitformerError("--min-bleu, --max-bleu-drop and --tgt-len are for "
                             "--task translation.")
    default_ac = min_accuracy is None and max_accuracy_drop is None
    profile = Profile(model=model, dataset=dataset, pattern=pattern,
                      level2_density=level2_density,
                      block=None if block is None else tuple(block), banks=banks,
                      nm_m=nm_m,
                      budget=budget, dense_dir=Path(dense_dir) if dense_dir else None, log=log,
                      task=task, text_column=text_column, label_column=label_column,
                      metric=metric)
    cons = Constraints(latency_ms, batch_size, seq_len, min_accuracy, max_accuracy_drop,
                       tgt_len or 0, profile.metric_name).check()
    if precision not in (None, "fp32", "fx16", "fx8"):
        raise FitformerError(f"--precision {precision}: choose fp32, fx16 or fx8.")
    devices = order_by_objective(load_catalog(devices_file, only), objective)
    objective_field = "price_usd" if objective == "price" else "power_w"
    profile.check()
    if clock_mhz is not None and (not math.isfinite(clock_mhz) or clock_mhz <= 0):
        raise FitformerError(f"--clock-mhz {clock_mhz} must be a positive number of MHz.")
    if precision is not None and not any(_precisions(d, precision) for d in devices):
        raise FitformerError(f"--precision {precision}: none of the devices offers it "
                             "(FPGAs: fx16, fx8; CPUs and GPUs: fp32).")
    out_dir = None
    if out is not False:
        out_dir = Path(out) if out else Path("fitformer-select")
        check_out_dir(out_dir)          # created only when the report is written
        if hls_sentences is not None:
            from fitformer.hls.project import check_out

            if hls_sentences < 1:
                raise FitformerError(f"--hls-sentences {hls_sentences} must be >= 1.")
            check_out(out_dir / "hls")
    from fitformer.hardware.frontends import load_dims
    from fitformer.hardware.workload import ModelDims

    if translation:      # before any training: the lengths the model can take
        from fitformer.models.seq2seq import Seq2SeqShape

        dims = (load_dims(str(dense_dir))[0] if dense_dir is not None else
                ModelDims(1, 1, 1, 1, 1, max_positions=Seq2SeqShape().max_positions,
                          decoder_layers=1))
        dims.check_seq_len(seq_len, cons.tgt_len)
    elif dense_dir is None:
        load_dims(model)[0].check_seq_len(seq_len)
    if gpu_engine is not None:
        from fitformer.hardware.gpu import get_engine

        get_engine(gpu_engine)          # an unknown engine fails before any work
    profile.check_data()
    majority = profile.majority_baseline_dev()
    if cons.min_accuracy is not None:
        _check_above_majority(cons.min_accuracy, majority, cons)
    log(profile.plan().text(" (only the points the answer needs)"))
    lat = _Latency(profile, cons, clock_mhz, gpu_engine)
    # The host CPU is measured before any training of this query (a machine just loaded by
    # training gives slow, unsteady figures); points that need a trained run come later.
    # Unpriced for the objective, it can never be chosen: it is measured only when named
    # in --only.
    host = next((d for d in devices if _is_host(d) and _precisions(d, precision)), None)
    skip_host = host is not None and host.num(objective_field) is None and \
        not (only and host.id in only)
    measured = host is not None and not skip_host and lat.premeasure_host(host)
    dense = profile.dense()
    if host is not None and not skip_host and not measured:
        lat.premeasure_host(host)
    dense_dev = dense.accuracy["dev"]["fp32"]
    target = cons.target(dense_dev)
    target_note = None
    if default_ac and majority is not None and target <= majority and not translation:
        # The default AC (not the user's) fell to the majority-class rate: a weak dense
        # model (a smoke budget). Points must then beat the majority class, and no more.
        base = ("majority-class rate" if cons.metric == "accuracy" else
                "majority-class baseline")
        target_note = (f"the default AC (dense dev {cons.label} {dense_dev:.4f} - "
                       f"{cons.max_accuracy_drop:g}) is at or below the {base} "
                       f"{majority:.4f}: points must beat the majority class instead")
        log(f"note: {target_note}.")
        target = majority
    elif default_ac and translation and target <= 0:
        # The default BLEU drop (not the user's) below a dense model that translates next
        # to nothing (a smoke budget's): the floor is BLEU 0, which every point meets.
        target_note = (f"the default AC (dense dev BLEU {dense_dev:.2f} - "
                       f"{cons.max_accuracy_drop:g}) is at or below 0 BLEU: the dense model "
                       "barely translates (a smoke run), so every point meets it")
        log(f"note: {target_note}.")
        target = 0.0
    elif cons.min_accuracy is None:
        _check_above_majority(target, majority, cons, dense_dev)
    ignore = ("clock_mhz",) if clock_mhz is not None else ()
    rows = []
    decided = None          # the first feasible device: later ones cannot change the answer
    for i, dev in enumerate(devices, 1):
        log(f"[{i}/{len(devices)}] {dev.id} ...")
        problems = dev.problems(ignore)
        if problems:
            log(f"  {dev.id}: infeasible, " + "; ".join(p["message"] for p in problems))
            rows.append(_figures_row(dev, problems, objective_field))
            continue
        if skip_host and dev.id == host.id:
            rows.append(_unmeasured_host_row(dev, objective_field))
            continue
        try:
            rows.append(evaluate_device(dev, lat, profile, cons, target, precision,
                                        objective_field, log, may_train=decided is None))
            if decided is None and rows[-1]["feasible"]:
                decided = rows[-1]["id"]
                log(f"  {decided} meets LC and AC; the devices after it are evaluated on "
                    "points already trained only (they cannot change the answer).")
        except _DeviceFigures as exc:
            log(f"  {dev.id}: infeasible, {exc}")
            rows.append(_figures_row(dev, [{"field": None, "problem": "missing",
                                            "message": str(exc)}], objective_field))
    best = next((r for r in rows if r["feasible"]), None)
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "best_device": best["id"] if best else None,
        "constraints": cons.as_dict(),
        "target_accuracy_dev": target,
        "target_note": target_note,
        "majority_rate_dev": profile.majority_rate_dev(),
        "majority_baseline_dev": majority,
        "metric": {"name": cons.metric, "scale_max": cons.scale_max, "label": cons.label},
        "task": task,
        "objective": objective, "model": model, "dataset": dataset,
        "pattern": pattern, "block": list(profile.block), "banks": banks,
        **({"nm_m": profile.nm_m} if pattern == "nm" else {}), "budget": budget,
        "max_length": 64,
        "dense_accuracy": {"dev": dense_dev, "test": dense.accuracy["test"]["fp32"]},
        "profile": [p.as_dict() for p in profile.known()],
        "devices": rows, "artifacts": {},
    }
    if out_dir is not None:
        from fitformer.select.report import write_outputs

        write_outputs(report, out_dir, profile,
                      hls=None if hls_sentences is None else
                      {"sentences": hls_sentences, "devices_file": devices_file})
    return SelectResult(report, out_dir, 0 if best else 3)
