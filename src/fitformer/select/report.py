"""What `fitformer select` writes: ``report.json`` (schema :class:`Report`), an HTML report
with plots, the chosen pruned model (safetensors folder and HP container) and the chosen
design point."""

from __future__ import annotations

import base64
import html
import json
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from fitformer.select.outdir import HLS_DIR, MODEL_DIR, clear_owned, mark_model_dir
from fitformer.select.profile import Profile


class DeviceRow(BaseModel):
    """One device of ``report.json`` (issue 7); ``accuracy_dev`` and ``accuracy_test`` are
    scores in the report's ``metric`` (accuracy, macro-F1 or BLEU)."""

    model_config = ConfigDict(extra="allow")
    id: str
    name: str
    kind: str
    price_usd: float | None
    power_w: float | None
    precision: str | None
    latency_ms: float | None
    compute_ms: float | None
    call_overhead_ms: float | None
    sparsity: float | None
    hp_split: dict | None
    accuracy_dev: float | None
    accuracy_test: float | None
    fits: bool | None
    weights_on_chip: bool | None
    feasible: bool
    reason: Literal["ok", "latency", "accuracy", "resources", "no_price", "no_power",
                    "precision",
                    "incomplete_figures", "implausible_figures"]
    #: Host CPU rows: what ran (``backend``: ``hp-cpu`` or ``dense...``; ``kernel_isa``:
    #: the HP kernel's code path) and how steady the measured figure is (``steady``,
    #: ``spread`` = IQR / median of the samples, ``load_avg_1min`` before timing, ``cpus``,
    #: ``attempts``).
    measurement: dict | None = None


class Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid")
    latency_ms: float
    batch_size: int
    seq_len: int
    tgt_len: int | None = None
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None


class Report(BaseModel):
    """``report.json``; ``Report.model_json_schema()`` is its JSON schema.

    ``artifacts`` maps a name (``report_json``, ``report_html``, ``design_json``,
    ``model_dir``, ``container``, ``accuracy_plot``, ``latency_plot``,
    ``utilization_plot``) to a path relative to the folder that holds ``report.json``
    (POSIX separators), so the folder can be moved or copied as a whole."""

    model_config = ConfigDict(extra="allow")
    schema_version: int
    best_device: str | None
    constraints: Constraints
    metric: dict
    objective: Literal["price", "power"]
    model: str
    dataset: str
    dense_accuracy: dict
    devices: list[DeviceRow]
    artifacts: dict


def _pattern_text(report: dict) -> str:
    """The pattern with its block and banks (``hp 1x16 B=4``; ``nm m=20``; the pattern
    alone for unstructured and for reports made before ``block`` was recorded)."""
    if report["pattern"] == "nm":
        return f"nm m={report.get('nm_m', 4)}"
    if report["pattern"] == "unstructured" or "block" not in report:
        return report["pattern"]
    block, banks = report["block"], report.get("banks", 4)
    return f"{report['pattern']} {block[0]}x{block[1]} B={banks}"


def hls_project(report: dict, best: dict, point: dict, out_dir: Path, hls: dict,
                log) -> str | None:
    """Write the Vitis HLS project of the answer (``best``, its profile ``point``) into
    ``out_dir/hls`` with :func:`fitformer.hls.generate` at the chosen design
    (``out_dir/design.json``).

    Returns:
        ``None`` when written, else why no project applies (the answer is not an FPGA, the
        chosen point is dense or not HP, or the task is translation).
    """
    from fitformer.sparsity.patterns import Hierarchical

    if best["kind"] != "fpga":
        return f"the answer, {best['id']}, is a {best['kind']}; HLS projects are for FPGAs"
    if report["metric"]["name"] == "bleu":
        return "HLS generation supports encoder classifiers, not translation"
    if report["pattern"] != Hierarchical.name or not best["sparsity"]:
        what = "dense" if not best["sparsity"] else f"pruned with {report['pattern']}"
        return (f"the chosen point is {what}; the generated accelerator reads the HP format "
                "(an HP point with sparsity > 0)")
    from fitformer.hls import generate

    log(f"writing the HLS project of {best['id']} into {out_dir / HLS_DIR} ...")
    generate(point["run_dir"], best["id"], out_dir / HLS_DIR, design=out_dir / "design.json",
             devices_file=hls.get("devices_file"), sentences=int(hls["sentences"]),
             # the design's tokens; the testbench's dev sentences need the run's max_length
             seq_len=max(int(report["constraints"]["seq_len"]), int(report["max_length"])),
             log=log)
    return None


def write_outputs(report: dict, out_dir: Path, profile: Profile,
                  hls: dict | None = None) -> None:
    """Write the artifacts, plots (PNG), ``report.json`` and ``report.html`` into ``out_dir``
    (created). Every file select owns there is removed first, so no file of an earlier
    answer (a ``model.fitf``, ``design.json`` or ``model/``) stays beside the new report;
    ``model/`` gets select's marker (:mod:`fitformer.select.outdir`).

    ``hls`` (``{"sentences", "devices_file"}``): also write the Vitis HLS project of the
    answer into ``out_dir/hls`` (:func:`hls_project`).

    ``report["artifacts"]`` is filled with paths relative to ``out_dir`` (:class:`Report`);
    ``report.html`` embeds the plots as base64 ``data:`` URIs, so it renders on its own, and
    the PNG files are kept next to it.

    Raises:
        pydantic.ValidationError: ``report`` does not follow :class:`Report`.
        FitformerError: ``out_dir`` holds something select must not replace
            (:func:`fitformer.select.outdir.check_out_dir`).
        OSError: ``out_dir`` cannot be written.
    """
    Report.model_validate(report)
    clear_owned(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    art: dict[str, str] = {}
    best = next((d for d in report["devices"] if d["id"] == report["best_device"]), None)
    if best is not None:
        point = next(p for p in report["profile"] if abs(p["sparsity"] - best["sparsity"])
                     < 1e-9)
        model_dir = out_dir / MODEL_DIR
        shutil.copytree(point["run_dir"], model_dir,
                        ignore=shutil.ignore_patterns("checkpoint*", "*.partial"))
        mark_model_dir(model_dir, point["run_dir"], best["id"])
        art["model_dir"] = model_dir.name
        # The HP container rebuilds encoder classifiers of HP runs; a translation model ships
        # as its save_pretrained folder (masks included) only.
        from fitformer.sparsity.patterns import Hierarchical

        if report["pattern"] == Hierarchical.name and best["sparsity"] > 0 \
                and report["metric"]["name"] != "bleu":
            from fitformer.formats.export import export_run

            container = out_dir / "model.fitf"
            export_run(point["run_dir"], container,
                       best["precision"] if best["precision"] in ("fx16", "fx8") else "fp32")
            art["container"] = container.name
        design = {k: best.get(k) for k in ("id", "precision", "latency_ms", "compute_ms",
                                           "call_overhead_ms", "sparsity", "hp_split",
                                           "weights_on_chip", "utilization", "design",
                                           "design_family", "nonlinear", "method")}
        (out_dir / "design.json").write_text(json.dumps(design, indent=2) + "\n")
        art["design_json"] = "design.json"
        if hls is not None:
            why_not = hls_project(report, best, point, out_dir, hls, profile.log)
            if why_not is None:
                art["hls_project"] = HLS_DIR
            else:
                report["hls_not_written"] = why_not
    elif hls is not None:
        report["hls_not_written"] = "no device meets both constraints"
    plots = _plots(report, out_dir)
    art.update(plots)
    art["report_json"] = "report.json"
    art["report_html"] = "report.html"
    report["artifacts"] = art
    Report.model_validate(report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / "report.html").write_text(_html(report, plots, out_dir, profile))


def _plots(report: dict, out_dir: Path) -> dict[str, str]:
    """Write the PNG plots into ``out_dir``; ``{artifact name: file name}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    target = report["target_accuracy_dev"]
    metric = metric_label(report)
    # Accuracy vs sparsity, dev, per precision, with the AC line.
    fig, ax = plt.subplots(figsize=(6, 4))
    prof = report["profile"]
    for prec, style in (("fp32", "-o"), ("fx16", "--s"), ("fx8", ":^")):
        ax.plot([p["achieved_sparsity"] for p in prof],
                [p["accuracy"]["dev"][prec] for p in prof], style, label=f"dev {prec}")
    ax.plot([p["achieved_sparsity"] for p in prof], [p["accuracy"]["test"]["fp32"]
                                                     for p in prof], "-x", label="test fp32")
    ax.axhline(target, color="red", ls="--", label=f"AC: dev >= {target:.3f}")
    ax.set_xlabel("sparsity")
    ax.set_ylabel(metric + (" (greedy)" if metric == "BLEU" else ""))
    ax.set_title(f"{_pattern_text(report)} profile ({report['budget']} budget)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy.png", dpi=110)
    plt.close(fig)
    out["accuracy_plot"] = "accuracy.png"
    # Latency per device (its chosen or nearest point) against LC; a design that does not
    # fit its device has no latency to show.
    devs = [d for d in report["devices"] if _latency_ms(d) is not None]
    fig, ax = plt.subplots(figsize=(7, 0.35 * max(4, len(devs)) + 1))
    colors = ["#2a9d8f" if d["feasible"] else "#bbbbbb" for d in devs]
    ax.barh([d["id"] for d in devs], [d["latency_ms"] for d in devs], color=colors)
    ax.axvline(report["constraints"]["latency_ms"], color="red", ls="--", label="LC")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("latency ms (chosen or nearest point; green = feasible)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "latency.png", dpi=110)
    plt.close(fig)
    out["latency_plot"] = "latency.png"
    best = next((d for d in report["devices"] if d["id"] == report["best_device"]), None)
    if best is not None and best.get("utilization") and any(
            v is not None for v in best["utilization"].values()):
        util = {k: v for k, v in best["utilization"].items() if v is not None}
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(list(util), [v * 100 for v in util.values()], color="#264653")
        ax.set_ylabel("% of the device")
        ax.set_title(f"utilisation on {best['id']}")
        fig.tight_layout()
        fig.savefig(out_dir / "utilization.png", dpi=110)
        plt.close(fig)
        out["utilization_plot"] = "utilization.png"
    return out


def metric_label(report: dict) -> str:
    """How the report names its metric: ``accuracy``, ``macro-F1`` or ``BLEU``."""
    from fitformer.training.evaluation import METRIC_LABELS

    name = report["metric"]["name"]
    return report["metric"].get("label") or METRIC_LABELS.get(name, name)


def _latency_ms(row: dict) -> float | None:
    """A row's latency, ``None`` when its design does not fit the device (``fits`` false:
    the figure of a design that cannot be built is no latency)."""
    return None if row.get("fits") is False else row.get("latency_ms")


def train_command(profile: Profile) -> str:
    """The command that trains ``profile``'s points (:meth:`Profile.train_command`)."""
    return profile.train_command()


def measurement_text(m: dict | None) -> str:
    """``HP kernel avx2, load 1.9/2 CPUs, spread 4%`` (and ``unsteady``) for a measured
    figure: the code that ran (the HP CPU kernel and its ISA path, or dense PyTorch), the
    load and the spread; ``""`` otherwise."""
    if not m:
        return ""
    load = m.get("load_avg_1min")
    backend = str(m.get("backend") or "")
    parts = []
    if backend.startswith("hp-cpu"):
        parts.append("HP kernel" + (f" {m['kernel_isa']}" if m.get("kernel_isa") else ""))
    elif backend:
        parts.append("dense PyTorch")
    parts += [("load -" if load is None else f"load {load:.1f}")
             + (f"/{m['cpus']} CPUs" if m.get("cpus") else "")]
    if m.get("spread") is not None:
        parts.append(f"spread {m['spread']:.1%}")
    if m.get("steady") is False:
        parts.append("unsteady")
    if m.get("remeasured_from"):
        parts.append(f"re-measured (was {m['remeasured_from']['latency_ms']:.4g} ms)")
    return ", ".join(parts)


def _fmt(v, spec: str = "{:.4g}") -> str:
    if v is None:
        return "-"
    return spec.format(v) if isinstance(v, int | float) and not isinstance(v, bool) else str(v)


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _html(report: dict, plots: dict[str, str], out_dir: Path, profile: Profile) -> str:
    e = html.escape
    c = report["constraints"]
    metric = metric_label(report)
    ac = (f"dev {metric} >= {c['min_accuracy']}" if c.get("min_accuracy") is not None
          else f"dev {metric} drop <= {c['max_accuracy_drop']} (target "
               f"{report['target_accuracy_dev']:.4f})")
    shape = (f"batch {c['batch_size']} x {c['seq_len']} source tokens translated into "
             f"{c['tgt_len']} tokens" if c.get("tgt_len")
             else f"batch {c['batch_size']} x {c['seq_len']} tokens")
    head = (f"<h1>fitformer select: {e(str(report['best_device'] or 'no device qualifies'))}"
            "</h1>"
            f"<p>Model {e(report['model'])}, dataset {e(report['dataset'])}, pattern "
            f"{e(_pattern_text(report))}, budget {e(report['budget'])}. "
            f"LC {c['latency_ms']} ms for "
            f"{e(shape)}; AC: {e(ac)}; objective "
            f"{e(report['objective'])}. Dense dev {metric} "
            f"{report['dense_accuracy']['dev']:.4f}"
            + ("" if report.get("majority_baseline_dev") is None else
               f" (always answering the majority class: "
               f"{report['majority_baseline_dev']:.4f})")
            + f". {metric} measured at {report['max_length']} tokens.</p>")
    cols = ("id", "kind", "price_usd", "power_w", "feasible", "reason", "precision",
            "sparsity", "latency_ms", "accuracy_dev", "accuracy_test", "fits",
            "would_pass_with")
    heads = {"accuracy_dev": f"dev {metric}", "accuracy_test": f"test {metric}"}

    def cell(d, k):
        if k == "latency_ms":
            text = _fmt(_latency_ms(d))
            if d.get("measurement") and _latency_ms(d) is not None:
                text += f" ({measurement_text(d['measurement'])})"
        else:
            text = _fmt(d.get(k))
        # Rows from a select that names no command (the hint is select's when it does).
        if k == "would_pass_with" and "not trained" in text \
                and "fitformer profile" not in text:
            text += f" (train them: {train_command(profile)})"
        return f"<td>{e(text)}</td>"

    rows = "".join("<tr>" + "".join(cell(d, k) for k in cols) + "</tr>"
                   for d in report["devices"])
    table = ("<table border=1 cellpadding=3><tr>"
             + "".join(f"<th>{e(heads.get(k, k))}</th>" for k in cols)
             + "</tr>" + rows + "</table>")
    imgs = "".join(f'<p><img src="{_data_uri(out_dir / name)}" alt="{e(k)}"></p>'
                   for k, name in plots.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>fitformer select</title>"
            f"</head><body>{head}{table}{imgs}</body></html>\n")
