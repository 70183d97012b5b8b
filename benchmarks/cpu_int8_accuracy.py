"""Benchmark: dev and test accuracy of a pruned run with its HP linears on the int8 CPU
kernel (:class:`fitformer.kernels.int8.HPLinearInt8`), beside the run's own fp32 and fx8
figures (metrics.json). Target (issue 20): int8 dev accuracy within 0.01 of fx8.

Evaluates the full dev and test splits (1,000 sentences each for Rotten Tomatoes) at the
run's max length with the same batching as training's evaluation, and prints the int8 code
path, the machine load and the time.

    .venv/bin/python benchmarks/cpu_int8_accuracy.py --run ~/.cache/fitformer/runs/<HP run>
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

TARGET = 0.01


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="A pruned run directory (fitformer prune).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from fitformer.data import load_dataset
    from fitformer.formats.export import load_pruned_run
    from fitformer.kernels.cpu import convert
    from fitformer.kernels.int8 import int8_path
    from fitformer.models.loading import load_tokenizer, resolve_model
    from fitformer.training.budgets import get_budget
    from fitformer.training.evaluation import evaluate_classifier
    from fitformer.training.finetune import encode_splits
    from fitformer.training.runs import read_json

    run = Path(args.run).expanduser()
    key = read_json(run / "run.json", "give a run directory of fitformer prune")
    metrics = read_json(run / "metrics.json", "the run is incomplete; train it again")
    net, masks, pruning = load_pruned_run(run)
    r = int((pruning.get("params") or {}).get("r", 16))
    info = convert(net, masks, r=r, dtype=torch.int8)
    data = load_dataset(key.get("dataset", "rotten-tomatoes"))
    _, dev, test = encode_splits(load_tokenizer(resolve_model(str(run))), data,
                                 get_budget(key.get("budget", "default")),
                                 int(key.get("max_length", 64)))
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with torch.inference_mode():
        acc = {"dev": evaluate_classifier(net, dev).accuracy,
               "test": evaluate_classifier(net, test).accuracy}
    seconds = time.perf_counter() - start
    own = metrics["accuracy"]
    res = {"run": run.name, "pattern": pruning.get("pattern"),
           "sparsity": metrics.get("sparsity", {}).get("overall"),
           "backend": info["backend"], "int8_path": int8_path(), "threads":
           torch.get_num_threads(), "load_avg_1min": load, "seconds": round(seconds, 1),
           "int8": acc, "fp32": {s: own[s]["fp32"] for s in acc},
           "fx8": {s: own[s].get("fx8") for s in acc}}
    res["dev_int8_minus_fx8"] = acc["dev"] - res["fx8"]["dev"]
    res["target_met"] = abs(res["dev_int8_minus_fx8"]) <= TARGET
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"run {run.name} ({res['pattern']} {res['sparsity']:.3f}); {info['backend']}, int8 "
          f"path {res['int8_path']}; {res['threads']} threads; load (1 min) {load:.2f} on "
          f"{os.cpu_count()} CPUs; {seconds:.1f} s for dev + test")
    for split in ("dev", "test"):
        print(f"  {split}: int8 {acc[split]:.4f}   fx8 {res['fx8'][split]:.4f}   "
              f"fp32 {res['fp32'][split]:.4f}")
    print(f"int8 - fx8 on dev: {res['dev_int8_minus_fx8']:+.4f} (target |diff| <= {TARGET}): "
          + ("met" if res["target_met"] else "NOT met"))


if __name__ == "__main__":
    main()
