"""The selection demonstration (issue 7): the device `fitformer select` chooses for MiniLM
on Rotten Tomatoes over a grid of latency constraints, at two accuracy constraints.

LC runs over 13 log-spaced values from 0.1 ms to 1 s (batch 1 x 128 tokens); AC is a
maximum dev-accuracy drop of 0.02 and of 0.10 below the dense fine-tune. Prices: the
catalog's, plus the example user file ``examples/devices-used-prices.yaml`` (used-market
asks for the Alveo cards; the catalog has no list price for them). The profile is HP with
the default split and select's default block (1x16 since 2026-12-01) on the ``default``
budget.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fitformer.hardware.catalog import HOST_CPU_ID
from fitformer.select import select

LC_GRID_MS = tuple(float(f"{v:.3g}") for v in np.logspace(-1, 3, 13))
DROPS = (0.02, 0.10)


def run_sweep(*, devices_file: Path | None = Path("examples/devices-used-prices.yaml"),
              budget: str = "default", out_dir: Path = Path("docs"),
              log: Callable[[str], None] = print) -> list[dict]:
    """Run every (LC, AC) query; writes ``selection.{md,json}`` and
    ``img/selection.png``."""
    rows = []
    for drop in DROPS:
        for lc in LC_GRID_MS:
            res = select(latency_ms=lc, max_accuracy_drop=drop, budget=budget,
                         devices_file=devices_file, out=False, log=lambda m: None)
            rep = res.report
            best = next((d for d in rep["devices"] if d["id"] == rep["best_device"]), None)
            row = {"latency_ms_constraint": lc, "max_accuracy_drop": drop,
                   "target_dev": rep["target_accuracy_dev"], "best_device": rep["best_device"],
                   "price_usd": best["price_usd"] if best else None,
                   "kind": best["kind"] if best else None,
                   "precision": best["precision"] if best else None,
                   "sparsity": best["sparsity"] if best else None,
                   "latency_ms": best["latency_ms"] if best else None,
                   "accuracy_dev": best["accuracy_dev"] if best else None,
                   "accuracy_test": best["accuracy_test"] if best else None,
                   "misses": {d["id"]: d["reason"] for d in rep["devices"]}}
            rows.append(row)
            log(f"AC drop {drop:g}, LC {lc:g} ms -> {row['best_device'] or 'none'}"
                + (f" ({row['precision']}, sparsity {row['sparsity']:g}, "
                   f"{row['latency_ms']:.3g} ms, dev {row['accuracy_dev']:.3f})" if best else ""))
    dense = rep["dense_accuracy"]
    host = next((d for d in rep["devices"] if d["id"] == HOST_CPU_ID), None)
    host_curve = None if host is None else {
        "name": host["name"], "points": host["curve"].get("fp32", [])}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "selection.json").write_text(json.dumps(
        {"budget": budget, "devices_file": str(devices_file) if devices_file else None,
         "dense_accuracy": dense, "profile": rep["profile"], "block": rep["block"],
         "host_cpu": host_curve, "rows": rows}, indent=2) + "\n")
    _plot(rows, out_dir / "img" / "selection.png")
    (out_dir / "selection.md").write_text(_markdown(rows, dense, budget, devices_file,
                                                    rep["profile"], host_curve,
                                                    tuple(rep["block"])))
    return rows


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    devices = sorted({r["best_device"] for r in rows if r["best_device"]},
                     key=lambda d: next(r["price_usd"] for r in rows if r["best_device"] == d))
    levels = ["none", *devices]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for drop, marker in zip(DROPS, ("o", "s"), strict=True):
        sel = [r for r in rows if r["max_accuracy_drop"] == drop]
        ax.plot([r["latency_ms_constraint"] for r in sel],
                [levels.index(r["best_device"] or "none") + (0.08 if drop == DROPS[1] else 0)
                 for r in sel], marker + "-", drawstyle="steps-post",
                label=f"AC: dev drop <= {drop:g}")
    ax.set_yticks(range(len(levels)),
                  [lv if lv == "none" else
                   f"{lv} (${next(r['price_usd'] for r in rows if r['best_device'] == lv):,.0f})"
                   for lv in levels])
    ax.set_xscale("log")
    ax.set_xlabel("LC: latency constraint, ms (batch 1 x 128 tokens)")
    ax.set_title("device chosen by fitformer select (MiniLM, Rotten Tomatoes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _host_section(host: dict | None, dense: dict) -> list[str]:
    """The host CPU's measured curve (HP CPU kernel) and the LC from which it would qualify
    at each AC if the user gave it a price (it has none: it is never chosen here)."""
    if host is None or not host["points"]:
        return []
    pts = host["points"]
    dense_ms = next((p["latency_ms"] for p in pts if p["sparsity"] == 0), None)
    L = ["", f"## The host CPU ({host['name']})", "",
         "Measured on this machine (`fitformer estimate --device host-cpu`): the dense model "
         "on dense kernels at sparsity 0, and the model pruned to each grid point with its "
         "36 pruned linears on the HP CPU kernel (`fitformer.kernels.cpu`); batch 1 x 128 "
         "tokens, fp32, median of 10 runs. The host CPU has no price, so `select` shows it "
         "but never chooses it; give it one in `--devices` (e.g. 0 for a machine you "
         "already own) and it is chosen wherever it qualifies.", "",
         "| sparsity | latency ms | vs dense | dev acc fp32 |", "| --- | --- | --- | --- |"]
    for p in pts:
        acc = "-" if p["accuracy_dev"] is None else f"{p['accuracy_dev']:.4f}"
        ratio = f"{dense_ms / p['latency_ms']:.2f}x" if dense_ms else "-"
        L.append(f"| {p['sparsity']:g} | {p['latency_ms']:.3g} | {ratio} | {acc} |")
    L.append("")
    for drop in DROPS:
        ok = [p for p in pts if p["accuracy_dev"] is not None
              and p["accuracy_dev"] >= dense["dev"] - drop - 1e-12]
        if ok:
            best = min(ok, key=lambda p: p["latency_ms"])
            L.append(f"- AC drop <= {drop:g}: the host CPU would qualify from LC "
                     f"{best['latency_ms']:.3g} ms (sparsity {best['sparsity']:g}; dense "
                     f"kernels: {dense_ms:.3g} ms).")
    return L


def _markdown(rows, dense, budget, devices_file, profile, host=None,
              block=(16, 16)) -> str:
    L = ["# Device selection: chosen device vs latency constraint",
         "",
         "Made by `fitformer experiment select-sweep` (writes this file, `selection.json` "
         "and `img/selection.png`); each row is one `fitformer select --latency-ms LC "
         f"--max-accuracy-drop D --budget {budget} --devices {devices_file}` query.",
         "",
         f"MiniLM on Rotten Tomatoes, HP (default split, {block[0]}x{block[1]} level-1 "
         f"blocks), `{budget}` budget; dense dev "
         f"accuracy {dense['dev']:.4f} (test {dense['test']:.4f}). Prices: catalog plus "
         "the example file's used-market asks (devices without a price are shown in "
         "reports but never chosen). Latency for batch 1 x 128 tokens; accuracy at 64 "
         "tokens.",
         "",
         "![chosen device vs LC](img/selection.png)",
         "",
         "Profile used (dev accuracy fp32 / fx16 / fx8):",
         "",
         "| sparsity | achieved | dev fp32 | dev fx16 | dev fx8 | test fp32 |",
         "| --- | --- | --- | --- | --- | --- |"]
    for p in profile:
        a = p["accuracy"]
        L.append(f"| {p['sparsity']:g} | {p['achieved_sparsity']:.4f} | {a['dev']['fp32']:.4f} "
                 f"| {a['dev']['fx16']:.4f} | {a['dev']['fx8']:.4f} | {a['test']['fp32']:.4f} |")
    L += ["", "| AC: max drop | LC ms | chosen device | price USD | precision | sparsity | "
              "latency ms | dev acc | test acc |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["best_device"] is None:
            L.append(f"| {r['max_accuracy_drop']:g} | {r['latency_ms_constraint']:g} | none "
                     "(infeasible) | - | - | - | - | - | - |")
            continue
        L.append(f"| {r['max_accuracy_drop']:g} | {r['latency_ms_constraint']:g} | "
                 f"{r['best_device']} | {r['price_usd']:,.0f} | {r['precision']} | "
                 f"{r['sparsity']:g} | {r['latency_ms']:.3g} | {r['accuracy_dev']:.4f} | "
                 f"{r['accuracy_test']:.4f} |")
    L += _host_section(host, dense)
    L.append("")
    return "\n".join(L)
