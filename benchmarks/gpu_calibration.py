"""GPU engine calibration (issue 15): refit every engine of fitformer.hardware.gpu to the
published measurements of gpu_calibration.yaml, print every point (fit and held out) with
its error, and write docs/gpu-calibration.md. Target: every point within 30%.

    .venv/bin/python benchmarks/gpu_calibration.py [--no-write]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()

    from fitformer.hardware.gpu import ENGINES, fit_engine, load_calibration

    cal = load_calibration()
    lines = ["# GPU latency calibration", "",
             "Made by `benchmarks/gpu_calibration.py` from "
             "`src/fitformer/hardware/gpu_calibration.yaml` (sources there). Model: "
             "`fitformer.hardware.gpu` (per-operation roofline at the engine's precision and "
             "fitted efficiencies, plus kernels x launch cost x a per-GPU factor). `fit` = "
             "used to fit, `held out` = predicted only. Target: every point within 30%.", ""]
    worst = 0.0
    for name in ENGINES:
        eng, scale, rows = fit_engine(name, cal)
        lines += [f"## {name}", "",
                  f"Fitted: launch {eng.launch_us:.2f} us per kernel "
                  f"({eng.kernels_per_layer} kernels per layer + {eng.kernels_fixed}), compute "
                  f"efficiency {eng.compute_efficiency:.3f}, memory efficiency "
                  f"{eng.memory_efficiency:.3f}; per-GPU launch factors "
                  + ", ".join(f"{g} {v:.2f}" for g, v in scale.items())
                  + " (a GPU without fit points uses 1).", "",
                  "| GPU | model | batch | seq | measured ms | predicted ms | error | use | "
                  "source |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            worst = max(worst, abs(r["error"]))
            lines.append(f"| {r['gpu']} | {r['model']} | {r['batch']} | {r['seq_len']} | "
                         f"{r['measured_ms']:.2f} | {r['predicted_ms']:.2f} | "
                         f"{r['error']:+.1%} | {'fit' if r['fit'] else 'held out'} | "
                         f"{cal['sources'][r['source']]} |")
        lines.append("")
    lines += [f"Largest error: {worst:.1%}.", "",
              "The catalog's GPUs (Jetson Orin Nano, RTX 4090) have no published point here: "
              "they use factor 1 and their figures are marked uncalibrated in reports.", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        out = Path(__file__).resolve().parents[1] / "docs" / "gpu-calibration.md"
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
