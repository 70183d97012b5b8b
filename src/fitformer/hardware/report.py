"""The typed result every latency back-end returns (design.md §6): one
:class:`LatencyReport` per (device, workload, inference), frozen, read by attribute
(``report.latency_ms``, ``report.fits``), serialised by :meth:`LatencyReport.to_json` into
the JSON contract of ``fitformer estimate --json`` (issue 5) and ``report.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: Keys every back-end fills; everything else is back-end specific (``details``).
CORE_KEYS = ("device", "method", "batch_size", "seq_len", "pattern", "sparsity", "hp_split",
             "workload", "latency_ms", "compute_ms", "call_overhead_ms", "precision", "fits",
             "weights_on_chip", "resources", "utilization", "units")


@dataclass(frozen=True)
class LatencyReport:
    """Latency of one inference on one device, with the evidence.

    Attributes:
        device: catalog id. method: ``model`` (FPGA accelerator model), ``engine model``
            (GPU), ``roofline`` (catalog CPU) or ``measured`` (host CPU).
        batch_size, seq_len: the inference (``seq_len``: source tokens of an
            encoder-decoder).
        latency_ms: ``compute_ms + call_overhead_ms`` (design.md §2), milliseconds.
        precision: ``fx16``/``fx8`` (FPGA), ``fp16``/``fp32`` (GPU engine), ``fp32`` (CPU).
        fits: the design fits the device (always true off FPGAs).
        units: rows per unit and layer (unit, layer, stack, parallelism, resources, cycles,
            latency_ms, bound).
        details: back-end specific fields (FPGA: design, roofline, available; GPU: engine,
            kernels; host CPU: samples, steadiness, load).
    """

    device: str
    method: str
    batch_size: int
    seq_len: int
    latency_ms: float
    compute_ms: float
    call_overhead_ms: float
    precision: str
    fits: bool
    units: tuple = ()
    details: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_json(cls, d: dict) -> LatencyReport:
        """A report from a back-end's JSON dict (the core keys plus details)."""
        core = {k: d[k] for k in ("device", "method", "batch_size", "seq_len", "latency_ms",
                                  "compute_ms", "call_overhead_ms", "precision", "fits")}
        rest = {k: v for k, v in d.items() if k not in core and k != "units"}
        return cls(**core, units=tuple(d.get("units", ())), details=MappingProxyType(rest))

    def to_json(self) -> dict:
        """The JSON contract (every key at the top level, as before the typed report)."""
        out = {"device": self.device, "method": self.method, "batch_size": self.batch_size,
               "seq_len": self.seq_len, **dict(self.details),
               "latency_ms": self.latency_ms, "compute_ms": self.compute_ms,
               "call_overhead_ms": self.call_overhead_ms, "precision": self.precision,
               "fits": self.fits, "units": [dict(u) for u in self.units]}
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """A back-end specific field (``details``) or a core one, by JSON key."""
        if key in self.details:
            return self.details[key]
        return getattr(self, key, default)

    def __getitem__(self, key: str) -> Any:
        """Read by JSON key, for notebook users and older callers; code reads attributes."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value


_MISSING = object()
