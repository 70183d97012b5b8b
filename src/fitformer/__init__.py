"""fitformer: pick the cheapest device for a Transformer under latency and accuracy
constraints, co-optimising hierarchical pruning and an FPGA accelerator model.

The Python API mirrors the command line (``fitformer fetch`` is ``fitformer.fetch()``,
``fitformer finetune`` is ``fitformer.finetune()``, and so on). Names are imported lazily so
that ``import fitformer`` and ``fitformer --help`` stay fast.
"""

from __future__ import annotations

import importlib

from fitformer._version import __version__
from fitformer.errors import FitformerError

_API = {
    "fetch": "fitformer.data.fetch",
    "load_dataset": "fitformer.data",
    "resolve_model": "fitformer.models.loading",
    "load_classifier": "fitformer.models.loading",
    "load_tokenizer": "fitformer.models.loading",
    "linear_layers": "fitformer.models.layers",
    "finetune": "fitformer.training.finetune",
    "prune": "fitformer.sparsity.prune",
    "PruneSpec": "fitformer.sparsity.prune",
    "make_pattern": "fitformer.sparsity.patterns",
    "format_sizes": "fitformer.formats.table",
    "formats_for_run": "fitformer.formats.report",
    "export_run": "fitformer.formats.export",
    "read_container": "fitformer.formats.container",
    "rebuild_model": "fitformer.formats.export",
    "load_catalog": "fitformer.hardware.catalog",
    "workload_from_pattern": "fitformer.hardware.workload",
    "workload_from_run": "fitformer.hardware.workload",
    "convert": "fitformer.kernels.cpu",
    "HPLinear": "fitformer.kernels.cpu",
    "explore": "fitformer.hardware.dse",
    "estimate": "fitformer.hardware.estimate",
    "simulate": "fitformer.hardware.simulator",
    "select": "fitformer.select",
    "Profile": "fitformer.select",
}

__all__ = ["FitformerError", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        # Cache it: importing the subpackage fitformer.select binds the module to the name
        # `select` in this namespace; the API function must win.
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fitformer' has no attribute {name!r}")
