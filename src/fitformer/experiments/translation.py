"""The translation demonstration (issue 9): the device `fitformer select --task translation`
chooses for the from-scratch encoder-decoder on Tatoeba English->French over a grid of
latency constraints, with BLEU as the accuracy constraint.

One inference translates one sentence of 16 source tokens into 16 target tokens (greedy).
AC: at most 2 dev BLEU points below the dense model (greedy, each device's precision).
Prices: the catalog's plus ``examples/devices-used-prices.yaml``. The profile is HP with the
default split; its pruned points are trained on the ``quick`` budget by default (60 steps
of 128 pairs per point from 2,000 training pairs, dev capped at 500 pairs: a smoke run, so
labelled), the dense reference on the full ``default`` budget.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fitformer.select import select

LC_GRID_MS = (1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0)
MAX_BLEU_DROP = 2.0
SRC_LEN = TGT_LEN = 16


def run_translation_select(*, devices_file: Path | None = Path(
        "examples/devices-used-prices.yaml"), budget: str = "quick",
        out_dir: Path = Path("docs"), log: Callable[[str], None] = print) -> list[dict]:
    """Run every LC of :data:`LC_GRID_MS`; writes ``translation-select.{md,json}`` and
    ``img/translation-select.png`` under ``out_dir``. Resumable: every trained point and
    estimate is cached, so a rerun only re-queries."""
    rows, rep = [], None
    for lc in LC_GRID_MS:
        res = select(task="translation", latency_ms=lc, max_bleu_drop=MAX_BLEU_DROP,
                     seq_len=SRC_LEN, tgt_len=TGT_LEN, budget=budget,
                     devices_file=devices_file, out=False, log=log)
        rep = res.report
        best = next((d for d in rep["devices"] if d["id"] == rep["best_device"]), None)
        rows.append({"latency_ms_constraint": lc, "best_device": rep["best_device"],
                     **{k: (best or {}).get(k) for k in ("price_usd", "kind", "precision",
                                                         "sparsity", "latency_ms",
                                                         "accuracy_dev", "accuracy_test")},
                     "misses": {d["id"]: d["reason"] for d in rep["devices"]}})
        log(f"LC {lc:g} ms -> {rep['best_device'] or 'none'}")
    assert rep is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = {d["id"]: {"price_usd": d["price_usd"], "kind": d["kind"], "curve": d["curve"]}
              for d in rep["devices"]}
    (out_dir / "translation-select.json").write_text(json.dumps(
        {"budget": budget, "devices_file": str(devices_file) if devices_file else None,
         "src_len": SRC_LEN, "tgt_len": TGT_LEN, "max_bleu_drop": MAX_BLEU_DROP,
         "target_dev_bleu": rep["target_accuracy_dev"],
         "dense_bleu": rep["dense_accuracy"], "profile": rep["profile"], "devices": curves,
         "rows": rows}, indent=2) + "\n")
    _plot(rep, out_dir / "img" / "translation-select.png")
    (out_dir / "translation-select.md").write_text(_markdown(rows, rep, budget, devices_file))
    return rows


def _fastest(curve: dict) -> tuple[str, list[dict]]:
    """The precision whose curve is fastest at its last point (fx8 on most FPGAs)."""
    return min(curve.items(), key=lambda kv: kv[1][-1]["latency_ms"] if kv[1] else 1e30)


def _plot(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    prof = rep["profile"]
    xs = [p["achieved_sparsity"] for p in prof]
    for prec, style in (("fp32", "-o"), ("fx8", ":^")):
        a1.plot(xs, [p["accuracy"]["dev"][prec] for p in prof], style, label=f"dev {prec}")
    a1.plot(xs, [p["accuracy"]["test"]["fp32"] for p in prof], "-x", label="test fp32")
    a1.axhline(rep["target_accuracy_dev"], color="red", ls="--", label="AC (dev)")
    a1.set_xlabel("sparsity (HP)")
    a1.set_ylabel("BLEU (greedy)")
    a1.set_title(f"BLEU vs sparsity ({rep['budget']} budget points)")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    for d in rep["devices"]:
        prec, pts = _fastest(d["curve"])
        if not pts:
            continue
        a2.plot([p["sparsity"] for p in pts], [p["latency_ms"] for p in pts],
                "-o" if len(pts) > 1 else "s", ms=4, label=f"{d['id']} ({prec})")
    a2.set_yscale("log")
    a2.set_xlabel("sparsity (HP)")
    a2.set_ylabel("latency ms, 16 -> 16 tokens")
    a2.set_title("latency vs sparsity per device")
    a2.legend(fontsize=7, ncol=2)
    a2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(rows: list[dict], rep: dict, budget: str, devices_file) -> str:
    def f(v, spec="{:.3g}"):
        return "-" if v is None else spec.format(v)

    dense = rep["dense_accuracy"]
    lines = [
        "# Device selection for translation (BLEU as the accuracy constraint)", "",
        "Made by `fitformer experiment translation-select` (cached and resumable; see "
        "`src/fitformer/experiments/translation.py`).", "",
        f"One inference: one sentence of {SRC_LEN} source tokens translated greedily into "
        f"{TGT_LEN} target tokens (`--src-len {SRC_LEN} --tgt-len {TGT_LEN}`). AC: dev BLEU "
        f"at most {MAX_BLEU_DROP:g} points below the dense model, at the device's "
        f"precision (target {rep['target_accuracy_dev']:.2f}). Prices: the catalog's plus "
        f"`{devices_file}`. Dense model: the from-scratch pre-norm 3+3 Transformer trained "
        f"on the `default` budget, dev BLEU {dense['dev']:.2f}, test {dense['test']:.2f} "
        f"(greedy). Pruned points: HP, default split, chained, **`{budget}` budget**"
        + (" (60 steps of 128 pairs per point from 2,000 training pairs; dev capped at 500 "
           "pairs, so dev BLEU of a pruned point is on another subset than the dense "
           "model's 1,000: compare test BLEU, which is on all 1,001 test pairs for every "
           "point). A smoke budget, not a tuned recipe." if budget == "quick" else "."), "",
        "![BLEU and latency vs sparsity](img/translation-select.png)", "",
        "## Profile", "",
        "| sparsity (req. / achieved) | dev fp32 | dev fx16 | dev fx8 | test fp32 | test fx8 |",
        "| --- | --- | --- | --- | --- | --- |"]
    for p in rep["profile"]:
        a = p["accuracy"]
        lines.append(f"| {p['sparsity']:g} / {p['achieved_sparsity']:.4f} | "
                     f"{a['dev']['fp32']:.2f} | {a['dev']['fx16']:.2f} | {a['dev']['fx8']:.2f}"
                     f" | {a['test']['fp32']:.2f} | {a['test']['fx8']:.2f} |")
    lines += ["", "## Latency per device (ms, its fastest precision)", "",
              "| device | price USD | precision | " + " | ".join(
                  f"{s:g}" for s in (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)) + " |",
              "| --- | --- | --- |" + " --- |" * 6]
    for d in rep["devices"]:
        prec, pts = _fastest(d["curve"])
        by = {p["sparsity"]: p["latency_ms"] for p in pts}
        lines.append(f"| {d['id']} | {f(d['price_usd'], '{:,.0f}')} | {prec} | " + " | ".join(
            f(by.get(s)) for s in (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)) + " |")
    lines += ["", "CPUs and GPUs other than the host run dense kernels (dense point only); "
              "the host CPU is measured (HP kernel in the encoder; decoder steps of one "
              "token run dense). GPU decoding pays the call overhead once per step.", "",
              "## Choice per latency constraint", "",
              "| LC ms | best device | price USD | precision | sparsity | latency ms | "
              "dev BLEU | test BLEU |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['latency_ms_constraint']:g} | {r['best_device'] or 'none'} | "
                     f"{f(r['price_usd'], '{:,.0f}')} | {r['precision'] or '-'} | "
                     f"{f(r['sparsity'], '{:g}')} | {f(r['latency_ms'])} | "
                     f"{f(r['accuracy_dev'], '{:.2f}')} | {f(r['accuracy_test'], '{:.2f}')} |")
    return "\n".join(lines) + "\n"
