"""Benchmark: `fitformer select` wall time (issue 7 targets, absolute, so the machine load
is printed alongside).

- ``--queries``: with the profile already cached, time LC/AC queries that need no training
  (target: each under 30 s); the first query of a new workload also fills the DSE cache.
- ``--quick``: in a fresh FITFORMER_HOME that shares only the fetched inputs and the cached
  dense fine-tune, time the first `select --budget quick` that must train its profile
  points (target: under 10 minutes), then a repeat (cached).

    .venv/bin/python benchmarks/selection.py --queries
    .venv/bin/python benchmarks/selection.py --quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def _load() -> str:
    return f"machine load (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def queries(devices: str | None) -> None:
    from fitformer.select import select

    print(_load())
    for lc, drop in ((10.0, 0.05), (1.0, 0.10), (0.5, 0.02), (100.0, 0.10), (0.05, 0.05)):
        t0 = time.perf_counter()
        res = select(latency_ms=lc, max_accuracy_drop=drop, devices_file=devices, out=False,
                     log=lambda m: None)
        print(f"LC {lc:g} ms, AC drop {drop:g}: {res.report['best_device']} in "
              f"{time.perf_counter() - t0:.1f} s (target < 30 s)")
    print(_load())


def quick(devices: str | None) -> None:
    from fitformer.paths import fitformer_home
    from fitformer.training.finetune import finetune

    real = fitformer_home()
    dense = finetune("default", "rotten-tomatoes", budget="default").path  # must be cached
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        for sub in ("downloads", "models", "data"):
            (home / sub).symlink_to(real / sub)
        (home / "runs").mkdir()
        shutil.copytree(dense, home / "runs" / dense.name, symlinks=True)
        os.environ["FITFORMER_HOME"] = str(home)
        from fitformer.select import select

        print(_load())
        for label in ("first (trains its quick profile points)", "repeat (cached)"):
            t0 = time.perf_counter()
            res = select(latency_ms=1.0, max_accuracy_drop=0.10, budget="quick",
                         devices_file=devices, out=False, log=lambda m: None)
            print(f"{label}: {res.report['best_device']} in "
                  f"{(time.perf_counter() - t0) / 60:.1f} min (target < 10 min)")
        print(_load())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--devices", default="examples/devices-used-prices.yaml")
    args = ap.parse_args()
    if not (args.queries or args.quick):
        ap.error("give --queries and/or --quick")
    if args.queries:
        queries(args.devices)
    if args.quick:
        quick(args.devices)


if __name__ == "__main__":
    main()
