"""Latency back-ends: one per catalog ``kind``, in one registry (design.md §6).

A back-end turns a device (:class:`~fitformer.hardware.catalog.Device`) and a workload
(:class:`~fitformer.hardware.workload.Workload`, the IR the front-ends build) into a
:class:`~fitformer.hardware.report.LatencyReport`. Each lives in its own module and
registers itself here with :func:`register`, keyed by the catalog ``kind`` it serves:

========================  ==========  =================================================
module                    key         method (``LatencyReport.method``)
========================  ==========  =================================================
:mod:`.fpga`              ``fpga``    ``model``: the DSE's best accelerator design point
:mod:`.gpu`               ``gpu``     ``engine model``: roofline + kernel launches
:mod:`.cpu`               ``cpu``     ``roofline``: dense fp32 roofline per operation
:mod:`.host_cpu`          ``host-cpu`` ``measured``: the model run on this machine
========================  ==========  =================================================

The host CPU is a ``kind: cpu`` entry generated at run time; it is served by the back-end
keyed by its id, :data:`~fitformer.hardware.catalog.HOST_CPU_ID` (:func:`backend_for`).
:func:`fitformer.hardware.estimate.estimate` checks the request and dispatches here.

Adding a device kind is one back-end file plus catalog data (docs/design.md §6.10). Say
an NPU whose latency is the dense roofline at its fp16 peak:

1. ``src/fitformer/hardware/backends/npu.py``::

       \"\"\"The NPU back-end: dense roofline at the fp16 peak (Williams et al., 2009).\"\"\"
       from fitformer.hardware.backends import EstimateRequest, register
       from fitformer.hardware.backends.cpu import roofline_report
       from fitformer.hardware.report import LatencyReport

       @register("npu")
       def npu_backend(device, wl, req: EstimateRequest) -> LatencyReport:
           \"\"\"Per op max(FLOPs / peak_tflops_fp16, bytes / dram_gbytes_per_s).\"\"\"
           fp16 = device.model_copy(update={"peak_tflops": device.peak_tflops_fp16})
           return roofline_report(fp16, wl, req)

   A model of its own builds the dict itself: ``report_header(device, wl, method, req)``
   then ``latency_ms``, ``compute_ms``, ``call_overhead_ms``, ``precision``, ``fits``,
   ``units`` (rows per unit and layer) and any details, through
   ``LatencyReport.from_json``. Every module of this package is imported when the
   package is (:func:`_import_backends`), so the file needs no line elsewhere.
2. ``devices.yaml``: the kind under ``kinds:`` with the figures its model cannot do
   without, ``npu: {needs: [peak_tflops_fp16, dram_gbytes_per_s]}``, and its devices
   under ``devices:`` with ``kind: npu`` and every figure sourced. Users can add more
   devices of the kind in a ``--devices`` file.

``fitformer estimate --device <id>`` then answers for it, and ``select`` walks it as a
dense fp32 device (:func:`register`'s ``pins_precision``, ``exploits_sparsity`` and
``measures`` say otherwise); a device lacking a figure of ``needs`` is named by
``Device.problems`` and skipped. ``tests/hardware/test_backends.py`` runs this example and
checks that the registry and the catalog's kinds agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from fitformer.errors import FitformerError
from fitformer.hardware.catalog import HOST_CPU_ID, Device
from fitformer.hardware.report import LatencyReport
from fitformer.hardware.workload import Workload


@dataclass(frozen=True)
class EstimateRequest:
    """What to estimate, besides the device and the workload.

    Attributes:
        batch, seq_len: the inference: ``batch`` sequences of ``seq_len`` tokens (source
            tokens of an encoder-decoder).
        tgt_len: decoder steps (target tokens) of an encoder-decoder; 0 for an encoder.
        precision: a pinned precision (``fx16``/``fx8`` on FPGAs, ``fp32``) or ``None``.
        clock_mhz: FPGA clock override, MHz, or ``None`` for the device's.
        model, pruned: the real model a measuring back-end runs (``model``: ``default``, a
            folder or a hub id; ``pruned``: a pruned run directory or HP container).
        use_cache: read the DSE's and the host measurement's caches.
        gpu_engine: a name of :data:`fitformer.hardware.gpu.ENGINES`, or ``None`` for the
            default.
        measure: also time the real model on the device (GPUs with CUDA; the host CPU is
            always measured).
    """

    batch: int = 1
    seq_len: int = 128
    tgt_len: int = 0
    precision: str | None = None
    clock_mhz: float | None = None
    model: str = "default"
    pruned: str | None = None
    use_cache: bool = True
    gpu_engine: str | None = None
    measure: bool = False


#: A back-end's function: ``(device, workload, request) -> LatencyReport``.
BackendFn = Callable[[Device, Workload, EstimateRequest], LatencyReport]


@dataclass(frozen=True)
class Backend:
    """One registered latency back-end.

    Attributes:
        kind: the catalog ``kind`` it serves (or ``host-cpu``, the host's id).
        run: the function, ``(device, workload, request) -> LatencyReport``.
        pins_precision: ``--precision`` may choose among the device's ``precisions`` (the
            FPGA's fixed point); elsewhere only ``fp32`` (or none) is accepted and the
            back-end reports the precision it used.
        exploits_sparsity: the latency depends on the pruned structure (FPGA accelerator,
            HP CPU kernel), so ``select`` evaluates every sparsity; elsewhere dense kernels
            run and only the dense point is evaluated.
        measures: ``--measure`` is meaningful: the back-end can time the real model.
    """

    kind: str
    run: BackendFn
    pins_precision: bool = False
    exploits_sparsity: bool = False
    measures: bool = False


_REGISTRY: dict[str, Backend] = {}
#: The registered back-ends by key (read-only view; :func:`register` adds to it).
BACKENDS = MappingProxyType(_REGISTRY)


def register(kind: str, *, pins_precision: bool = False, exploits_sparsity: bool = False,
             measures: bool = False) -> Callable[[BackendFn], BackendFn]:
    """Decorator: register a back-end function for the catalog ``kind`` (see the module
    docstring for a worked example). Returns the function unchanged.

    Raises:
        ValueError: ``kind`` already has a back-end (two modules claim it: a programming
            error, not a user's).
    """
    def deco(fn: BackendFn) -> BackendFn:
        if kind in _REGISTRY and _REGISTRY[kind].run is not fn:
            raise ValueError(f"latency back-end kind {kind!r} registered twice "
                             f"({_REGISTRY[kind].run.__module__} and {fn.__module__}).")
        _REGISTRY[kind] = Backend(kind, fn, pins_precision, exploits_sparsity, measures)
        return fn
    return deco


def known_kinds() -> list[str]:
    """The registered keys, sorted (the host CPU's id included)."""
    return sorted(_REGISTRY)


def backend_for(device: Device) -> Backend:
    """The back-end of ``device``: the host CPU's by its id, every other by its ``kind``.

    Raises:
        FitformerError: no back-end covers the device's kind; the message names the known
            kinds.
    """
    backend = _REGISTRY.get(HOST_CPU_ID if device.id == HOST_CPU_ID else device.kind)
    if backend is None:
        raise FitformerError(f"device {device.id} has kind {device.kind!r}, which no latency "
                             f"back-end covers; known kinds: {', '.join(known_kinds())} "
                             "(a new kind needs a back-end in fitformer/hardware/backends/).")
    return backend


def report_header(device: Device, wl: Workload, method: str, req: EstimateRequest) -> dict:
    """The fields every back-end's report starts with: device, method, the inference
    (``tgt_len`` for an encoder-decoder only) and the workload's pattern, sparsity, HP
    split and source."""
    extra = {"tgt_len": req.tgt_len} if wl.dims.is_seq2seq else {}
    return {"device": device.id, "method": method, "batch_size": req.batch,
            "seq_len": req.seq_len, **extra, "pattern": wl.pattern,
            "sparsity": round(wl.overall_sparsity, 6), "hp_split": wl.hp_split,
            "workload": wl.source}


def _import_backends() -> None:
    """Import every module of this package (they register themselves): a new back-end
    file needs no line elsewhere. Runs at the end of this module, once the names the
    back-ends import from here exist."""
    import importlib
    import pkgutil

    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if not mod.startswith("_"):
            importlib.import_module(f"{__name__}.{mod}")


_import_backends()
