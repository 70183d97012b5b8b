"""Benchmark: cycle-level simulation speed (issue 6 target: one 1536x384 layer with 128
tokens at the DSE-chosen ZCU104 design in under 10 s on 2 cores).

Simulates MiniLM's layer-0 ffn_in (1536 x 384) for HP and unstructured masks at sparsity
0.8 (one-shot masks of the pretrained weights) at the design the DSE chose for HP on
ZCU104, batch 1 x 128 tokens; prints the machine load and the wall time of each.

    .venv/bin/python benchmarks/simulator.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from transformers import AutoConfig

    from fitformer.hardware.catalog import load_catalog
    from fitformer.hardware.frontends import (
        load_dims,
        one_shot_masks,
        workload_from_masks,
        workload_from_pattern,
    )
    from fitformer.hardware.simulator import issue_schedule, simulate

    dev = load_catalog(only=["zcu104"], include_host=False)[0]
    _, ref = load_dims("default")
    config = AutoConfig.from_pretrained(ref.load_from)
    design = workload_from_pattern("default", pattern="hp", sparsity=0.8)
    layer = "bert.encoder.layer.0.intermediate.dense"
    print(f"machine load (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for pattern in ("hp", "unstructured"):
        masks = one_shot_masks("default", pattern, 0.8)
        wl = workload_from_masks(masks, config, pattern=pattern)
        times = []
        for _ in range(args.repeats):
            issue_schedule.cache_clear()
            t0 = time.perf_counter()
            rep = simulate(dev, wl, masks, [layer], design_workload=design)
            times.append(time.perf_counter() - t0)
        print(f"{pattern:12s} {layer} {tuple(masks[layer].shape)}: "
              f"{statistics.median(times):.2f} s median of {args.repeats} (target < 10 s), "
              f"{rep['cycles']:,} cycles, {rep['family']} design "
              f"{rep['design'].get('array') or rep['design'].get('ffn_in')}")


if __name__ == "__main__":
    main()
