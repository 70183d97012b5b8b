"""Validation of the accelerator model (issue 5): a published FPGA Transformer
accelerator, and HP against other patterns on one device.

(a) **FQ-BERT** (Liu, Li, Cheng, "Hardware-Software Co-Design of Quantized BERT", DATE 2021,
arXiv 2103.02800): BERT on a ZCU102 at 214 MHz, batch 1, 128 tokens, 4-bit weights and
8-bit activations, weights streamed from DRAM, encoder layers on the FPGA (embedding and
task layers on the CPU); 12 PUs x 8 PEs x 16 multipliers: 1,751 DSP, 43.89 ms. The paper
does not state the model size; its ">20 GFLOPs" and ">320 MB" match BERT-base (12 layers,
hidden 768, 12 heads, FFN 3072), which we assume. Our model has no 4-bit weights: fx8 is
the nearest (twice the weight traffic).

(b) MiniLM (all-MiniLM-L6-v2) on one device: HP, column-balanced block, unstructured and
dense designs at equal sparsity (the control), and at equal dev accuracy using the
sparsity each pattern reached in the pattern comparison (``docs/pattern-comparison.json``).
Pruned runs of the comparison are used when cached (their real masks), else one-shot masks
of the pretrained weights (labelled).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fitformer.hardware.accelerator import LINEAR_UNITS
from fitformer.hardware.catalog import load_catalog
from fitformer.hardware.dse import explore
from fitformer.hardware.frontends import (
    dense_workload,
    workload_from_pattern,
    workload_from_run,
)
from fitformer.hardware.resources import CONSTANTS
from fitformer.hardware.workload import (
    ModelDims,
    Workload,
)

FQBERT = {"citation": "Liu, Li, Cheng, Hardware-Software Co-Design of Quantized BERT, "
                      "DATE 2021 (arXiv 2103.02800), Table III",
          "device": "zcu102", "clock_mhz": 214, "batch": 1, "seq_len": 128,
          "dsp": 1751, "bram_18k": 838, "lut": 123157, "ff": 124433, "latency_ms": 43.89,
          "multipliers": 12 * 8 * 16, "weights_bits": 4, "activation_bits": 8}
BERT_BASE = ModelDims(layers=12, hidden=768, heads=12, intermediate=3072, vocab=30522)
ENCODER_UNITS = ("qkv", "attention", "attn_out", "add_norm", "ffn_in", "ffn_out")
PATTERNS = ("hp", "cbb", "unstructured")
GRID = (0.5, 0.7, 0.8, 0.9)
DROPS = (0.01, 0.03, 0.05, 0.10)


def _encoder_ms(est) -> float:
    """Latency of the encoder layers only (FQ-BERT runs embedding and classifier on the
    CPU): the units' rows without the pooler and classifier hosted on ``attn_out``."""
    cycles = 0
    for name in ENCODER_UNITS:
        for row in est.units[name].rows:
            if row.label not in ("pooler", "classifier"):
                cycles += row.cycles
    return cycles / (est.clock_mhz * 1e3)


def _macs(wl: Workload, batch: int, seq_len: int) -> int:
    d = wl.dims
    lin = sum(m.shape[0] * m.shape[1] for m in wl.matrices
              if m.role not in ("pooler", "classifier")) * batch * seq_len
    return lin + d.layers * batch * d.heads * 2 * seq_len * seq_len * d.head_dim


def validate_fqbert() -> dict:
    """Our model configured like FQ-BERT: the DSE on a full ZCU102, and capped at FQ-BERT's
    DSP count; encoder-only latency compared with the published one."""
    dev = load_catalog(only=[FQBERT["device"]], include_host=False)[0]
    wl = dense_workload(BERT_BASE)
    out = {"reference": FQBERT}
    capped = dev.model_copy(update={"dsp": dev.dsp.model_copy(update={"value": FQBERT["dsp"]})})
    for name, device in (("full_zcu102", dev), ("dsp_capped_1751", capped)):
        est = explore(wl, device, precision="fx8", batch=1, seq_len=128,
                      clock_mhz=FQBERT["clock_mhz"], use_cache=False)
        res = est.resources.as_dict()
        mults = sum(u.parallelism.get("P", 1) * wl.banks * u.parallelism.get("T", 1)
                    for n, u in est.units.items() if n in LINEAR_UNITS)
        out[name] = {"encoder_ms": _encoder_ms(est), "compute_ms": est.compute_ms,
                     "resources": res, "weights_on_chip": est.design.weights_on_chip,
                     "design": est.design.knobs, "linear_multipliers": mults,
                     "by_unit_ms": {n: u.cycles / (est.clock_mhz * 1e3)
                                    for n, u in est.units.items() if u.rows}}
    macs = _macs(wl, 1, 128)
    out["macs"] = macs
    out["ideal_ms_at_reference_multipliers"] = macs / (FQBERT["multipliers"]
                                                       * FQBERT["clock_mhz"] * 1e3)
    return out


def _workload_for(pattern: str, sparsity: float, rows: list[dict]) -> tuple[Workload, str]:
    from fitformer.paths import runs_dir

    for r in rows:
        if (r["series"] == pattern and abs(r["requested_sparsity"] - sparsity) < 1e-9
                and (runs_dir() / r["run_dir"] / "masks.safetensors").is_file()):
            return workload_from_run(runs_dir() / r["run_dir"]), "pruned run"
    return workload_from_pattern("default", pattern=pattern, sparsity=sparsity), (
        "counts" if pattern in ("hp", "cbb") else "one-shot masks")


def compare_patterns(device_id: str, comparison: dict, *, batch: int = 1,
                     seq_len: int = 128) -> dict:
    """DSE results per pattern and sparsity on one device, and at equal dev accuracy."""
    dev = load_catalog(only=[device_id], include_host=False)[0]
    rows = comparison.get("rows", [])
    equal_sparsity = []
    dense = explore(workload_from_pattern("default", sparsity=0.0), dev, batch=batch,
                    seq_len=seq_len)
    equal_sparsity.append(_point("dense", 0.0, dense, "dense", None))
    for pattern in PATTERNS:
        for s in GRID:
            wl, how = _workload_for(pattern, s, rows)
            est = explore(wl, dev, batch=batch, seq_len=seq_len)
            acc = next((r["dev_fp32"] for r in rows
                        if r["series"] == pattern and abs(r["requested_sparsity"] - s) < 1e-9),
                       None)
            equal_sparsity.append(_point(pattern, wl.overall_sparsity, est, how, acc, s))
    dense_dev = comparison.get("dense", {}).get("dev", {}).get("fp32")
    equal_accuracy = []
    for drop in DROPS:
        entry = {"max_drop": drop, "target_dev": None if dense_dev is None
                 else dense_dev - drop}
        for pattern in PATTERNS:
            ok = [p for p in equal_sparsity if p["pattern"] == pattern
                  and p["dev_fp32"] is not None and p["dev_fp32"] >= entry["target_dev"]]
            best = max(ok, key=lambda p: p["requested_sparsity"], default=None)
            entry[pattern] = None if best is None else {
                "sparsity": best["requested_sparsity"], "latency_ms": best["latency_ms"],
                "dev_fp32": best["dev_fp32"]}
        entry["dense_latency_ms"] = equal_sparsity[0]["latency_ms"]
        equal_accuracy.append(entry)
    return {"device": device_id, "batch": batch, "seq_len": seq_len,
            "equal_sparsity": equal_sparsity, "equal_accuracy": equal_accuracy,
            "dense_dev_fp32": dense_dev}


def _point(pattern, sparsity, est, how, acc, requested=0.0) -> dict:
    res = est.resources.as_dict()
    return {"pattern": pattern, "requested_sparsity": requested, "sparsity": sparsity,
            "structure_from": how, "latency_ms": est.compute_ms,
            "precision": est.design.precision, "weights_on_chip": est.design.weights_on_chip,
            "dsp": res["dsp"], "bram_18k": res["bram_18k"], "uram": res["uram"],
            "dev_fp32": acc}


def run_validation(*, device_id: str = "zcu104", out_dir: Path = Path("docs"),
                   log: Callable[[str], None] = print) -> dict:
    """Run (a) and (b) and write ``accelerator-validation.{md,json}`` and
    ``img/accelerator-latency.png`` under ``out_dir``."""
    log("FQ-BERT configuration on ZCU102 ...")
    fq = validate_fqbert()
    comp_path = out_dir / "pattern-comparison.json"
    comparison = json.loads(comp_path.read_text()) if comp_path.is_file() else {}
    log(f"patterns on {device_id} ...")
    pats = compare_patterns(device_id, comparison)
    result = {"fqbert": fq, "patterns": pats}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "accelerator-validation.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(pats, out_dir / "img" / "accelerator-latency.png")
    (out_dir / "accelerator-validation.md").write_text(_markdown(result, comparison))
    return result


def _plot(pats: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    pts = pats["equal_sparsity"]
    ax.axhline(pts[0]["latency_ms"], color="grey", ls=":", label="dense")
    for pattern in PATTERNS:
        p = [x for x in pts if x["pattern"] == pattern]
        ax.plot([x["sparsity"] for x in p], [x["latency_ms"] for x in p], "-o", label=pattern)
    ax.set_xlabel("sparsity of the prunable matrices")
    ax.set_ylabel("compute latency, ms (model)")
    ax.set_yscale("log")
    ax.set_title(f"MiniLM on {pats['device']}: best design per point "
                 f"(batch {pats['batch']} x {pats['seq_len']} tokens)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(result: dict, comparison: dict) -> str:
    fq, pats = result["fqbert"], result["patterns"]
    ref = fq["reference"]
    L = ["# Accelerator model: validation",
         "",
         "Made by `fitformer experiment accelerator` (writes this file, "
         "`accelerator-validation.json` and `img/accelerator-latency.png`). The model itself "
         "is described in `docs/accelerator-model.md`.",
         "",
         "## (a) A published FPGA accelerator: FQ-BERT on ZCU102",
         "",
         f"Reference: {ref['citation']}. ZCU102 at {ref['clock_mhz']} MHz, batch "
         f"{ref['batch']} x {ref['seq_len']} tokens, {ref['weights_bits']}-bit weights and "
         f"{ref['activation_bits']}-bit activations, weights streamed from DRAM, encoder "
         "layers on the FPGA. Model dimensions assumed BERT-base (the paper gives none). "
         "Ours: the same board, clock and input, fx8 (we model no 4-bit weights), dense.",
         "",
         "| design | encoder latency ms | DSP | BRAM_18K | LUT | FF | weights |",
         "| --- | --- | --- | --- | --- | --- | --- |",
         f"| FQ-BERT (published) | {ref['latency_ms']:.2f} | {ref['dsp']:,} | "
         f"{ref['bram_18k']:,} | {ref['lut']:,} | {ref['ff']:,} | streamed, 4-bit |"]
    for name, label in (("dsp_capped_1751", "ours, DSE capped at 1,751 DSP"),
                        ("full_zcu102", "ours, DSE on the whole ZCU102")):
        r = fq[name]
        res = r["resources"]
        L.append(f"| {label} | {r['encoder_ms']:.2f} | {res['dsp']:,} | {res['bram_18k']:,} "
                 f"| {res['lut']:,} | {res['ff']:,} | "
                 f"{'on chip' if r['weights_on_chip'] else 'streamed'}, 8-bit |")
    capped = fq["dsp_capped_1751"]
    ratio = capped["encoder_ms"] / ref["latency_ms"]
    L += ["",
          f"BERT-base encoder at 128 tokens: {fq['macs'] / 1e9:.2f} GMAC; FQ-BERT's "
          f"{ref['multipliers']:,} multipliers at {ref['clock_mhz']} MHz need at least "
          f"{fq['ideal_ms_at_reference_multipliers']:.2f} ms, so the published 43.89 ms is "
          f"{fq['ideal_ms_at_reference_multipliers'] / ref['latency_ms']:.0%} multiplier "
          "utilisation.",
          "",
          f"At FQ-BERT's DSP budget our model predicts {capped['encoder_ms']:.2f} ms, "
          f"{ratio:.2f}x the published latency. Per unit (ms): "
          + ", ".join(f"{k} {v:.2f}" for k, v in capped["by_unit_ms"].items()) + ".",
          "",
          "Why they differ:",
          "",
          "- FQ-BERT has one array of 8x4-bit multipliers shared by every matrix product, "
          "used back to back; ours has one unit per operation kind (design.md §6), so the "
          "DSPs are split between units that run in turn and most are idle at any time.",
          "- Our softmax, layer norm and GELU are fp32 units (design.md §4) and cost DSPs "
          "that FQ-BERT spends on 8-bit fixed-point versions.",
          "- FQ-BERT packs 8x4-bit products; our fx8 packs two 8x8 products per DSP48E2 "
          "only with shared operands (WP486) and streams twice the weight bits.",
          "- The model's LUT/FF constants are assumed (see `docs/accelerator-model.md`); "
          "the DSP and BRAM rules follow datasheets.",
          "",
          f"## (b) MiniLM on {pats['device']}: HP against other patterns",
          "",
          f"Best design per point (DSE over fx16/fx8, weights on chip or streamed), batch "
          f"{pats['batch']} x {pats['seq_len']} tokens. Structure from the pattern "
          "comparison's pruned runs when cached, else from counts (HP, cbb) or one-shot "
          "masks of the pretrained weights (unstructured).",
          "",
          "![latency vs sparsity](img/accelerator-latency.png)",
          "",
          "### Equal sparsity (control)",
          "",
          "| pattern | sparsity req. / achieved | structure from | latency ms | precision "
          "| weights | DSP | BRAM_18K | URAM | dev fp32 |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in pats["equal_sparsity"]:
        acc = "-" if p["dev_fp32"] is None else f"{p['dev_fp32']:.3f}"
        L.append(f"| {p['pattern']} | {p['requested_sparsity']:g} / {p['sparsity']:.3f} | "
                 f"{p['structure_from']} | {p['latency_ms']:.3f} | {p['precision']} | "
                 f"{'on chip' if p['weights_on_chip'] else 'streamed'} | {p['dsp']:,} | "
                 f"{p['bram_18k']:,} | {p['uram']:,} | {acc} |")
    L += ["", "### Equal dev accuracy", "",
          "For each allowed drop below the dense dev accuracy "
          f"({pats['dense_dev_fp32'] if pats['dense_dev_fp32'] is not None else 'unknown'}"
          "), the highest sparsity of the grid that each pattern reached in the pattern "
          "comparison and the latency of its best design. '-': no finished point meets the "
          "target (or the comparison has not reached it yet).",
          "",
          "| max drop | target dev | " + " | ".join(PATTERNS) + " | dense |",
          "| --- | --- | " + " | ".join("---" for _ in PATTERNS) + " | --- |"]
    for e in pats["equal_accuracy"]:
        cells = []
        for pattern in PATTERNS:
            v = e[pattern]
            cells.append("-" if v is None else
                         f"{v['sparsity']:g}: {v['latency_ms']:.3f} ms (dev {v['dev_fp32']:.3f})")
        tgt = "-" if e["target_dev"] is None else f"{e['target_dev']:.3f}"
        L.append(f"| {e['max_drop']:.0%} | {tgt} | " + " | ".join(cells)
                 + f" | {e['dense_latency_ms']:.3f} ms |")
    finished = comparison.get("runs_finished")
    L += ["", f"Pattern comparison runs finished when this was made: {finished} of "
              f"{comparison.get('runs_planned')}.", ""]
    return "\n".join(L)


def constants_table() -> str:
    """The model's constants as a Markdown table (for docs/accelerator-model.md)."""
    lines = ["| constant | value | unit | source | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, c in CONSTANTS.items():
        lines.append(f"| `{name}` | {c.value:g} | {c.unit} | {c.source} | {c.meaning} |")
    return "\n".join(lines)
