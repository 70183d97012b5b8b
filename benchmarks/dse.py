"""Benchmark: analytical model and design-space exploration speed (issue 5 targets: one
design point in under 10 ms, one device explored in under 1 s).

For MiniLM with HP at sparsity 0.8 (batch 1 x 128 tokens), prints the machine load, the
median time of one full design-point estimate (every unit evaluated, memories placed) and
the time of one uncached exploration per FPGA in the catalog (both precisions, weights on
chip and streamed), with the design-point count per exploration.

    .venv/bin/python benchmarks/dse.py [--repeats 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from fitformer.hardware.accelerator import estimate_design, minimal_design
    from fitformer.hardware.catalog import load_catalog
    from fitformer.hardware.dse import _Explorer, explore, platform_of
    from fitformer.hardware.frontends import workload_from_pattern

    wl = workload_from_pattern("default", pattern="hp", sparsity=0.8)
    fpgas = [d for d in load_catalog(include_host=False) if d.kind == "fpga"]
    plat = platform_of(fpgas[0])
    design = minimal_design("fx16")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        estimate_design(wl, design, plat, 1, 128)
        times.append((time.perf_counter() - t0) * 1e3)
    point_ms = statistics.median(times)
    per_device = {}
    for dev in fpgas:
        counter = {"n": 0}
        orig = _Explorer.estimate

        def counted(self, d, _orig=orig, _c=counter):
            _c["n"] += 1
            return _orig(self, d)

        _Explorer.estimate = counted
        t0 = time.perf_counter()
        est = explore(wl, dev, use_cache=False)
        per_device[dev.id] = {"explore_s": time.perf_counter() - t0,
                              "design_points": counter["n"],
                              "latency_ms": est.compute_ms}
        _Explorer.estimate = orig
    result = {"load_avg_1min": os.getloadavg()[0], "cpus": os.cpu_count(),
              "design_point_ms": point_ms, "design_point_target_ms": 10,
              "explore_target_s": 1, "devices": per_device}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine load (1 min): {result['load_avg_1min']:.2f} on {result['cpus']} CPUs")
    print(f"one design point: {point_ms:.2f} ms median of {args.repeats} (target < 10 ms)")
    for did, r in per_device.items():
        print(f"explore {did:12s} {r['explore_s']:.3f} s, {r['design_points']:5d} design "
              f"points, best {r['latency_ms']:.3f} ms (target < 1 s)")


if __name__ == "__main__":
    main()
