"""HLS generation and C simulation (issue 19), measured in one run; prints the load.

1. ``g++ -fsyntax-only -Wall`` on the generated whole-classifier project for every FPGA of
   the catalog (each at the DSE's best design for the run on that device);
2. csim of one full encoder layer (embedding, layer 0, pooler, classifier) on ZCU104 at
   fx16 and fx8: bit-exact values against the exact fixed-point path, compile and run time.

    .venv/bin/python benchmarks/hls_csim.py [RUN_DIR] [--sentences N] [--skip-syntax]

RUN_DIR: a pruned HP run (default: the first cached HP 0.8 default-budget run).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _default_run() -> Path:
    from fitformer.paths import fitformer_home

    for d in sorted((fitformer_home() / "runs").glob("*/")):
        try:
            key = json.loads((d / "run.json").read_text())
        except (OSError, ValueError):
            continue
        if key.get("pattern") == "hp" and abs(key.get("density", 0) - 0.2) < 1e-6 \
                and key.get("budget") == "default" and isinstance(key.get("hp_split"), dict):
            return d
    raise SystemExit("no cached HP 0.8 run: `fitformer prune --pattern hp --sparsity 0.8`")


def main() -> None:
    from fitformer.hardware.catalog import load_catalog
    from fitformer.hls import csim, generate, syntax_check

    ap = argparse.ArgumentParser()
    ap.add_argument("run", nargs="?")
    ap.add_argument("--sentences", type=int, default=20)
    ap.add_argument("--skip-syntax", action="store_true")
    args = ap.parse_args()
    run = Path(args.run) if args.run else _default_run()
    print(f"run {run}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    quiet = lambda m: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_syntax:
            for dev in load_catalog(include_host=False):
                if dev.kind != "fpga":
                    continue
                prj = Path(tmp) / dev.id
                try:
                    rec = generate(run, dev.id, prj, sentences=1, log=quiet)
                except Exception as exc:  # noqa: BLE001 - report and go on
                    print(f"{dev.id:12s} not generated: {exc}")
                    continue
                start = time.perf_counter()
                warnings = syntax_check(prj)
                print(f"{dev.id:12s} {rec['design']['family']:6s} {rec['precision']} "
                      f"{rec['design']['knobs']}: g++ -fsyntax-only -Wall ok, "
                      f"{len(warnings)} warnings, {time.perf_counter() - start:.1f} s")
        for precision in ("fx16", "fx8"):
            prj = Path(tmp) / f"layer-{precision}"
            generate(run, "zcu104", prj, sentences=args.sentences, precision=precision,
                     encoder_layers=1, log=quiet)
            res = csim(prj, log=quiet)
            print(f"zcu104 {precision}, one encoder layer, {res['sentences']} dev sentences: "
                  f"{res['bit_exact']}/{res['values']} logits bit-exact, same class "
                  f"{res['same_class']}/{res['sentences']}; compile {res['compile_s']:.1f} s, "
                  f"run {res['run_s']:.1f} s (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
