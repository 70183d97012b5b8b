"""Benchmark: fitformer's HP CPU kernel vs the engines users deploy with (issue 20, item 1).

The pruned MiniLM classifier (``--pruned DIR`` runs made by ``fitformer prune``, or by
default the pretrained MiniLM with one-shot HP masks at sparsities 0.8 and 0.9, default
split), 128 tokens, batch 1 and 32, all timed interleaved in one run:

- ``fitformer``: :func:`fitformer.convert` (the HP kernel, code path printed);
- ``fitformer_int8``: ``convert(..., dtype=torch.int8)`` (the int8 HP kernel: per-row int8
  weights, inputs quantised per token; its code path printed), the equal-precision peer of
  ``ort_int8``;
- ``eager``: the masked dense model in PyTorch eager mode (the reference);
- ``ort_fp32``: ONNX Runtime (CPU execution provider, all graph optimisations) on the
  masked dense model exported with ``torch.onnx.export`` (TorchScript exporter, opset 17);
- ``ort_int8``: the same ONNX model after ``onnxruntime.quantization.quantize_dynamic``
  (int8 weights, activations quantized per call, as ONNX Runtime does it);
- ``compile``: ``torch.compile`` (inductor) of the masked dense model (``--no-compile``
  skips it: it compiles for minutes on a busy 2-core machine).

Every engine uses torch's thread count (ONNX Runtime: ``intra_op_num_threads``). Medians
of interleaved repeats after one warm-up; the CPU model, the machine load and the ratios
are printed. Needs ``pip install 'fitformer[peers]'`` (onnxruntime, onnx).

    .venv/bin/python benchmarks/cpu_peers.py [--pruned DIR ...] [--batch 1,32]
        [--seq-len 128] [--repeats 7] [--no-compile] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cpu_spmm import keep_freed_memory, measure, parse_with_threads  # noqa: E402


def _models(pruned: list[str]):
    """``[(label, masked dense model, masks)]``: runs, or one-shot HP masks at 0.8, 0.9."""
    from fitformer.formats.export import load_pruned_run
    from fitformer.hardware.frontends import one_shot_masks
    from fitformer.models.loading import load_classifier, resolve_model

    out = []
    for run in pruned:
        model, masks, pruning = load_pruned_run(run)
        out.append((f"run {Path(run).name} (HP {pruning.get('achieved_sparsity', 0):.3f})",
                    model.eval(), masks))
    if not pruned:
        for s in (0.8, 0.9):
            net = load_classifier(resolve_model("default")).eval()
            masks = {k: torch.from_numpy(v)
                     for k, v in one_shot_masks("default", "hp", s).items()}
            with torch.no_grad():
                for name, m in masks.items():
                    net.get_submodule(name).weight.mul_(m)
            out.append((f"MiniLM, one-shot HP {s}", net, masks))
    return out


def _ort_sessions(model, ids, mask, folder: Path, threads: int) -> dict:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = folder / "model.onnx"
    int8 = folder / "model.int8.onnx"
    torch.onnx.export(model, (ids, mask), str(fp32), dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                    "attention_mask": {0: "batch", 1: "seq"}})
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ONNX Runtime's pool threads spin after each run by default, taking the CPUs from the
    # engine timed next in the interleaved loop; they sleep here, as torch's do.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return {name: ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            for name, path in (("ort_fp32", fp32), ("ort_int8", int8))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pruned", action="append", default=[])
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = parse_with_threads(ap)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SystemExit("needs ONNX Runtime: pip install 'fitformer[peers]'") from None

    from fitformer.kernels.cpu import convert, kernel_status
    from fitformer.kernels.int8 import int8_path

    keep_freed_memory()
    status = kernel_status()
    threads = torch.get_num_threads()
    load = os.getloadavg()[0]
    rows = []
    for label, masked, masks in _models(args.pruned):
        hp = copy.deepcopy(masked)
        convert(hp, masks)
        hp8 = copy.deepcopy(masked)
        convert(hp8, masks, dtype=torch.int8)
        compiled = None if args.no_compile else torch.compile(copy.deepcopy(masked))
        for batch in (int(b) for b in args.batch.split(",")):
            gen = torch.Generator().manual_seed(0)
            ids = torch.randint(1, masked.config.vocab_size, (batch, args.seq_len),
                                generator=gen)
            att = torch.ones_like(ids)
            with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
                sessions = _ort_sessions(masked, ids, att, Path(tmp), threads)
                feed = {"input_ids": ids.numpy(), "attention_mask": att.numpy()}
                fns = {"fitformer": partial(hp, input_ids=ids, attention_mask=att),
                       "fitformer_int8": partial(hp8, input_ids=ids, attention_mask=att),
                       "eager": partial(masked, input_ids=ids, attention_mask=att),
                       **{k: partial(s.run, None, feed) for k, s in sessions.items()}}
                if compiled is not None:
                    fns["compile"] = partial(compiled, input_ids=ids, attention_mask=att)
                ref = masked(input_ids=ids, attention_mask=att).logits
                diffs = {"fitformer": float((hp(input_ids=ids, attention_mask=att).logits
                                             - ref).abs().max()),
                         "fitformer_int8": float((hp8(input_ids=ids, attention_mask=att)
                                                  .logits - ref).abs().max()),
                         **{k: float((torch.from_numpy(s.run(None, feed)[0]) - ref)
                                     .abs().max()) for k, s in sessions.items()}}
                t = measure(fns, args.repeats)
            rows.append({"model": label, "batch": batch, "ms": t, "max_abs_logit_diff": diffs,
                         "fitformer_speedup": {k: v / t["fitformer"] for k, v in t.items()}})
    meta = {"cpu": status["cpu"], "isa": status["isa"], "int8_path": int8_path(),
            "threads": threads,
            "cpus": os.cpu_count(), "load_avg_1min_start": load,
            "load_avg_1min_end": os.getloadavg()[0], "seq_len": args.seq_len,
            "repeats": args.repeats, "onnxruntime": __import__("onnxruntime").__version__,
            "torch": torch.__version__}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=1))
        return
    print(f"CPU {meta['cpu']}; HP kernel path {meta['isa']} (int8 {meta['int8_path']}); "
          f"machine load (1 min) {load:.2f} "
          f"-> {meta['load_avg_1min_end']:.2f} on {meta['cpus']} CPUs; threads {threads}; "
          f"onnxruntime {meta['onnxruntime']}, torch {meta['torch']}; {args.seq_len} tokens; "
          f"{args.stat} of {args.repeats}, interleaved; ms (fitformer's speed-up over each)")
    for r in rows:
        cells = "  ".join(f"{k} {v:.1f} ({r['fitformer_speedup'][k]:.2f}x)"
                          for k, v in r["ms"].items())
        print(f"{r['model']}, batch {r['batch']}: {cells}")
    print("targets (issue 20): HP 0.9 at least 1.5x ONNX Runtime fp32 at batch 1 and 32; at "
          "least on par with ONNX Runtime int8 at equal precision (fitformer_int8 vs "
          "ort_int8 below)")
    for r in rows:
        if "fitformer_int8" in r["ms"]:
            print(f"{r['model']}, batch {r['batch']}: fitformer_int8 vs ort_int8 "
                  f"{r['ms']['ort_int8'] / r['ms']['fitformer_int8']:.2f}x")


if __name__ == "__main__":
    main()
