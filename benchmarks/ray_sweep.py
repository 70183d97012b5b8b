"""Scaling of a sweep on Ray (issue 21): independent pruning points (``--from-dense``) run
serially in this process at one torch thread, then as Ray tasks on a local 2-CPU Ray
instance (two one-CPU workers, one torch thread each), side by side in one run.

Each side gets its own fresh FITFORMER_HOME (fetched inputs linked, as tests/conftest.py
does) holding a copy of one tiny dense fine-tune, trained first and not timed. Printed:
the machine's ISA and its 1-minute load before and after each side, both wall times
(Ray's includes starting Ray), their ratio against the target (<= 0.65), and whether
every run's key and metrics are equal on both sides.

    .venv/bin/python benchmarks/ray_sweep.py [--budget tiny] [--patterns hp,unstructured]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

SHARED = ("downloads", "models", "data", "kernels")   # as tests/conftest.py
TARGET = 0.65


def _home(root: Path, real: Path) -> Path:
    h = root
    h.mkdir(parents=True)
    for sub in SHARED:
        (h / sub).symlink_to(real / sub)
    return h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="tiny")
    ap.add_argument("--patterns", default="hp,unstructured")
    ap.add_argument("--sparsities", default="0.5,0.7,0.8,0.9")
    args = ap.parse_args()

    from fitformer.kernels.cpu import isa_path
    from fitformer.paths import fitformer_home
    from fitformer.sparsity.chains import Chain, DenseJob, PointJob, split_from_dense
    from fitformer.sparsity.executors import RAY_DEFAULT, Executor, run_chains
    from fitformer.sparsity.prune import PruneSpec
    from fitformer.training.finetune import finetune

    real = fitformer_home()
    tmp = Path(tempfile.mkdtemp(prefix="ray-sweep-"))
    a, b = _home(tmp / "serial", real), _home(tmp / "ray", real)
    os.environ["FITFORMER_HOME"] = str(a)
    dense = finetune("default", "rotten-tomatoes", budget=args.budget)
    shutil.copytree(dense.path, b / "runs" / dense.path.name)
    sparsities = [float(s) for s in args.sparsities.split(",")]
    chains = split_from_dense([
        Chain(p, DenseJob(budget=args.budget), tuple(
            PointJob(PruneSpec(p, s), budget=args.budget) for s in sparsities))
        for p in args.patterns.split(",")])
    print(f"ISA path {isa_path()}; {len(chains)} independent {args.budget} points; "
          f"{os.cpu_count()} CPUs")

    quiet = lambda _: None  # noqa: E731
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    serial = run_chains(chains, Executor(threads=1), log=quiet)
    serial_s = time.perf_counter() - t
    load1 = os.getloadavg()[0]
    print(f"serial, 1 thread: {serial_s:.1f} s (load {load0:.2f} -> {load1:.2f})")

    os.environ["FITFORMER_HOME"] = str(b)
    import ray

    t = time.perf_counter()
    ray.init(num_cpus=2, object_store_memory=150 * 2**20, log_to_driver=False,
             include_dashboard=False)
    on_ray = run_chains(chains, Executor(ray=RAY_DEFAULT, threads=1), log=quiet)
    ray_s = time.perf_counter() - t
    load2 = os.getloadavg()[0]
    ray.shutdown()
    print(f"Ray, 2 workers x 1 thread: {ray_s:.1f} s incl. ray.init (load {load1:.2f} -> "
          f"{load2:.2f})")

    equal = True
    for x, y in zip(serial, on_ray, strict=True):
        for p, q in zip(x, y, strict=True):
            keep = ("accuracy", "loss", "sparsity", "steps")
            same = (p.run_dir.name == q.run_dir.name
                    and {k: p.metrics[k] for k in keep} == {k: q.metrics[k] for k in keep}
                    and json.loads((q.run_dir / "run.json").read_text())["torch_threads"] == 1)
            equal &= same
    ratio = ray_s / serial_s
    print(f"ratio Ray / serial: {ratio:.3f} (target <= {TARGET}): "
          f"{'met' if ratio <= TARGET else 'not met'}; runs (keys and metrics) equal: {equal}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
