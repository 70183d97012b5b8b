"""Benchmark: storage formats on real MiniLM matrices with HP masks.

For every prunable matrix of the pretrained all-MiniLM-L6-v2 (36 matrices), HP masks from
the real weights at sparsities 0.5, 0.7, 0.8, 0.9, 0.95 (block 16x16, 4 banks, default
split), 16-bit values: the size of the eight formats summed over the model, bits per kept
weight, and the ratio to the lower bound. Checks the targets of issue 4: HP smallest at
every point and within 1.15x of the bound; encode and decode of a 1536x384 matrix each under
50 ms (median of repeats; the machine load is printed beside it).

Writes ``docs/formats.md`` and ``docs/img/format-bits.png`` with ``--write-docs``.

    .venv/bin/python benchmarks/formats.py [--json] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()

    from fitformer.formats import FORMATS, format_sizes, make_format
    from fitformer.models import linear_layers, load_classifier, resolve_model
    from fitformer.sparsity.patterns import make_pattern

    net = load_classifier(resolve_model("default"))
    layers = [i for i in linear_layers(net) if i.prunable]
    hp = make_pattern("hp")
    results = []
    for s in SPARSITIES:
        totals = {f: 0 for f in FORMATS}
        bound = kept = 0
        for info in layers:
            w = net.get_submodule(info.name).weight.detach()
            levels = hp.plan(info.shape, s)
            mask = hp.mask_from_levels(w, levels)
            rows = format_sizes(w.numpy(), mask.numpy(), value_bits=16, pattern="hp",
                                counts=hp.counts(info.shape, levels))
            for r in rows:
                totals[r["format"]] += r["total_bits"]
            bound += rows[0]["bound_bits"]
            kept += int(mask.sum())
        smallest = min(totals, key=totals.get)
        results.append({"sparsity": s, "kept": kept, "bound_bits": bound,
                        "bits": totals, "bits_per_kept": {f: b / kept for f, b in totals.items()},
                        "ratio_to_bound": {f: b / bound for f, b in totals.items()},
                        "smallest": smallest})

    ffn = next(i for i in layers if i.shape == (1536, 384))
    w = net.get_submodule(ffn.name).weight.detach()
    mask = hp.mask(w, 0.9).numpy()
    fmt = make_format("hp")
    v = w.numpy()
    enc_t, dec_t = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        enc = fmt.encode(v, mask)
        t1 = time.perf_counter()
        fmt.decode(enc)
        dec_t.append(time.perf_counter() - t1)
        enc_t.append(t1 - t0)
    timing = {"encode_ms": statistics.median(enc_t) * 1e3,
              "decode_ms": statistics.median(dec_t) * 1e3,
              "load_avg_1min": os.getloadavg()[0]}
    targets = {
        "hp_smallest_everywhere": all(r["smallest"] == "hp" for r in results),
        "hp_max_ratio_to_bound": max(r["ratio_to_bound"]["hp"] for r in results),
        "encode_under_50ms": timing["encode_ms"] < 50, "decode_under_50ms":
            timing["decode_ms"] < 50}
    if args.json:
        print(json.dumps({"results": results, "timing": timing, "targets": targets}, indent=2))
    else:
        print(f"machine load (1 min): {timing['load_avg_1min']:.2f}")
        head = "sparsity " + " ".join(f"{f:>7}" for f in FORMATS) + "   bound  (bits per kept)"
        print(head)
        for r in results:
            print(f"{r['sparsity']:8.2f} " + " ".join(
                f"{r['bits_per_kept'][f]:7.2f}" for f in FORMATS)
                + f" {r['bound_bits'] / r['kept']:7.2f}")
        print("HP ratio to bound: " + ", ".join(
            f"{r['sparsity']:g}: {r['ratio_to_bound']['hp']:.3f}" for r in results))
        print(f"HP encode {timing['encode_ms']:.1f} ms, decode {timing['decode_ms']:.1f} ms "
              f"(1536x384 at 0.9, median of {args.repeats})")
        print(f"targets: {targets}")
    if args.write_docs:
        write_docs(results, timing, targets)


def write_docs(results, timing, targets) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fitformer.formats import FORMATS

    docs = Path("docs")
    (docs / "img").mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = [r["sparsity"] for r in results]
    for f in FORMATS:
        ax.plot(xs, [r["bits_per_kept"][f] for r in results], "-o", label=f)
    ax.plot(xs, [r["bound_bits"] / r["kept"] for r in results], "k--", label="lower bound")
    ax.set_yscale("log")
    ax.set_xlabel("sparsity (HP, 16x16 blocks, 4 banks, default split)")
    ax.set_ylabel("bits per kept weight (16-bit values)")
    ax.set_title("MiniLM prunable matrices: storage cost per kept weight")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(docs / "img" / "format-bits.png", dpi=120)
    plt.close(fig)
    lines = ["# Storage formats on real MiniLM matrices", "",
             "Made by `.venv/bin/python benchmarks/formats.py --write-docs`: the 36 prunable "
             "matrices of the pretrained all-MiniLM-L6-v2 with HP masks from their real "
             "weights (16x16 blocks, 4 banks, default split), 16-bit values, index widths "
             "`ceil(log2(range))`.", "",
             "![bits per kept weight](img/format-bits.png)", "",
             "Bits per kept weight (whole model):", "",
             "| sparsity | " + " | ".join(FORMATS) + " | lower bound | HP / bound |",
             "| --- | " + " | ".join("---" for _ in FORMATS) + " | --- | --- |"]
    for r in results:
        lines.append(f"| {r['sparsity']:g} | " + " | ".join(
            f"{r['bits_per_kept'][f]:.2f}" for f in FORMATS)
            + f" | {r['bound_bits'] / r['kept']:.2f} | {r['ratio_to_bound']['hp']:.3f} |")
    lines += ["", "Model total (MB, 36 matrices):", "",
              "| sparsity | " + " | ".join(FORMATS) + " |",
              "| --- | " + " | ".join("---" for _ in FORMATS) + " |"]
    for r in results:
        lines.append(f"| {r['sparsity']:g} | " + " | ".join(
            f"{r['bits'][f] / 8e6:.3f}" for f in FORMATS) + " |")
    lines += ["", f"HP encode {timing['encode_ms']:.1f} ms and decode "
              f"{timing['decode_ms']:.1f} ms for a 1536x384 matrix at 0.9 (median; machine "
              f"load {timing['load_avg_1min']:.2f}).", "",
              f"Targets: HP smallest at every point: {targets['hp_smallest_everywhere']}; "
              f"largest HP / bound ratio {targets['hp_max_ratio_to_bound']:.3f} (target "
              f"<= 1.15); encode < 50 ms: {targets['encode_under_50ms']}; decode < 50 ms: "
              f"{targets['decode_under_50ms']}.", "",
              "Why HP wins: its balance removes every pointer, and its indices are tiny "
              "(2-bit in-bank offsets plus one block-row index per kept block), while CSR "
              "pays a column index per weight, BCSR/CBR store the pruned half of every kept "
              "block as zeros (level 2 is invisible to them), and CSB pads every bank of "
              "whole rows to the fullest one."]
    (docs / "formats.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
