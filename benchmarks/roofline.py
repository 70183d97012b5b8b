"""Benchmark: how close the DSE's designs come to each FPGA's roofline (issue 15 targets:
dense MiniLM on ZCU104, batch 1 x 128 tokens, fx8, at most 2x the device roofline; HP at
0.9 on ZCU104 at most 2x its own roofline).

For every FPGA of the catalog, dense MiniLM and HP at sparsity 0.9 (one-shot masks of the
real pretrained weights, so the row-tiled array sees the real spread of kept blocks), at
every precision the device offers: the best design of each family (``per_op`` = design
(a), ``shared`` = designs (b)-(d)), its latency, the roofline
``max(MACs / (DSP x MACs per DSP x f), weight bytes / bandwidth)`` and the ratio. Prints the
machine load (the ratios do not depend on it: the model is analytical).

    .venv/bin/python benchmarks/roofline.py [--devices zcu104,u280] [--json]
"""

from __future__ import annotations

import argparse
import json
import os


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default=None, help="comma-separated FPGA ids (default all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from transformers import AutoConfig

    from fitformer.hardware import frontends as W
    from fitformer.hardware.catalog import load_catalog
    from fitformer.hardware.dse import explore, platform_of
    from fitformer.hardware.roofline import fpga_roofline

    only = args.devices.split(",") if args.devices else None
    fpgas = [d for d in load_catalog(only=only, include_host=False) if d.kind == "fpga"]
    dims, ref = W.load_dims("default")
    config = AutoConfig.from_pretrained(ref.load_from)
    workloads = {
        "dense": W.workload_from_pattern("default", sparsity=0.0),
        "hp 0.9": W.workload_from_masks(W.one_shot_masks("default", "hp", 0.9), config,
                                        pattern="hp", sparsity=0.9,
                                        source="hp 0.9 (one-shot masks)"),
    }
    rows = []
    for dev in fpgas:
        plat = platform_of(dev)
        for name, wl in workloads.items():
            for prec in [p for p in dev.precisions if p in ("fx16", "fx8")]:
                roof = fpga_roofline(wl, dsp=plat.available["dsp"], dsp_type=plat.dsp_type,
                                     dram_gbytes_per_s=plat.dram_gbytes_per_s,
                                     clock_mhz=plat.clock_mhz, precision=prec, batch=1,
                                     seq_len=128)
                row = {"device": dev.id, "workload": name, "precision": prec,
                       "roofline_ms": roof["roofline_ms"], "roofline_bound": roof["bound"]}
                for fam in ("per_op", "shared"):
                    est = explore(wl, dev, precision=prec, use_cache=False, families=(fam,))
                    fits = est.resources.fits(plat.available)
                    row[fam] = {"compute_ms": est.compute_ms, "fits": fits,
                                "ratio": est.compute_ms / roof["roofline_ms"],
                                "dsp": est.resources.as_dict()["dsp"]}
                rows.append(row)
    result = {"load_avg_1min": os.getloadavg()[0], "cpus": os.cpu_count(),
              "batch": 1, "seq_len": 128, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine load (1 min) {result['load_avg_1min']:.2f} on {result['cpus']} CPUs; "
          "MiniLM, batch 1 x 128 tokens")
    print(f"{'device':<12} {'workload':<8} {'prec':<5} {'roofline ms':>11} "
          f"{'(a) per-op ms':>13} {'ratio':>7} {'(b-d) shared ms':>15} {'ratio':>7}")
    for r in rows:
        a, b = r["per_op"], r["shared"]
        print(f"{r['device']:<12} {r['workload']:<8} {r['precision']:<5} "
              f"{r['roofline_ms']:>11.3f} {a['compute_ms']:>13.3f} "
              f"{a['ratio']:>6.1f}x{'' if a['fits'] else '*'} {b['compute_ms']:>15.3f} "
              f"{b['ratio']:>6.2f}x{'' if b['fits'] else '*'}")
    print("* = even the smallest design of that family does not fit")


if __name__ == "__main__":
    main()
