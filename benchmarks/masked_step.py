"""Benchmark: masked (HP-pruning) training step vs dense training step, side by side.

Measures, in one process and interleaved so machine noise hits both alike, the median time
of an optimiser step of MiniLM on real Rotten Tomatoes batches (32 sentences, 64 tokens):

- dense: forward, backward, AdamW step;
- masked: the same with the 36 prunable weights behind mask parametrizations, plus the HP
  mask update of the gradual pruner amortised at its real rate (one update every
  ``update_every`` steps; default: 11, the rate of a default-budget point).

Prints the machine load and the ratio masked / dense (issue 3 target: at most 1.10).

    .venv/bin/python benchmarks/masked_step.py [--repeats 15] [--update-every 11] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--update-every", type=int, default=11)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from fitformer.data import load_dataset
    from fitformer.models import linear_layers, load_classifier, load_tokenizer, resolve_model
    from fitformer.sparsity.patterns import make_pattern
    from fitformer.sparsity.pruners import GradualMagnitudePruner
    from fitformer.training.loop import Encoded, _param_groups

    data = load_dataset("rotten-tomatoes")
    ref = resolve_model("default")
    tok = load_tokenizer(ref)
    train = Encoded(tok, data.train.subset(32 * 4), 64)
    batches = [train.batch(list(range(i * 32, (i + 1) * 32))) for i in range(4)]

    def make(masked: bool):
        torch.manual_seed(0)
        net = load_classifier(ref, data.label_names).train()
        hook = None
        if masked:
            hp = make_pattern("hp")
            final = {i.name: hp.plan(i.shape, 0.8) for i in linear_layers(net) if i.prunable}
            hook = GradualMagnitudePruner(hp, final, update_every=args.update_every)
            hook.on_train_begin(net, total_steps=30 * args.update_every)
        opt = torch.optim.AdamW(_param_groups(net, 0.01), lr=5e-5)
        return net, hook, opt

    def step(net, hook, opt, i):
        out = net(**batches[i % len(batches)])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    dense, masked = make(False), make(True)
    for k in range(2):  # warm-up
        step(*dense, k)
        step(*masked, k)
    t_dense, t_step, t_update = [], [], []
    for k in range(args.repeats):
        t0 = time.perf_counter()
        step(*dense, k)
        t1 = time.perf_counter()
        step(*masked, k)
        t2 = time.perf_counter()
        net, hook, _ = masked
        hook.on_step_end(net, args.update_every * (k + 1), 30 * args.update_every)
        t3 = time.perf_counter()
        t_dense.append(t1 - t0)
        t_step.append(t2 - t1)
        t_update.append(t3 - t2)
    dense_ms = statistics.median(t_dense) * 1e3
    step_ms = statistics.median(t_step) * 1e3
    update_ms = statistics.median(t_update) * 1e3
    masked_ms = step_ms + update_ms / args.update_every
    result = {"dense_step_ms": dense_ms, "masked_step_ms": step_ms,
              "mask_update_ms": update_ms, "update_every": args.update_every,
              "masked_amortised_ms": masked_ms, "ratio_masked_to_dense": masked_ms / dense_ms,
              "load_avg_1min": os.getloadavg()[0], "threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine load (1 min): {result['load_avg_1min']:.2f}, torch threads "
          f"{result['threads']}")
    print(f"dense step        {dense_ms:8.1f} ms (median of {args.repeats})")
    print(f"masked step       {step_ms:8.1f} ms")
    print(f"HP mask update    {update_ms:8.1f} ms, every {args.update_every} steps")
    print(f"ratio masked (update amortised) / dense: {result['ratio_masked_to_dense']:.3f} "
          "(target <= 1.10)")


if __name__ == "__main__":
    main()
