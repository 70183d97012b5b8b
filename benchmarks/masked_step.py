"""Benchmark: the cost of an HP-pruning training step against a dense one, side by side.

Times the real training loop (:func:`fitformer.training.loop.train_classifier`, with its
Ctrl-C gradient hooks, clipping, scheduler and progress reporter) on real Rotten Tomatoes
batches of MiniLM (32 sentences, 64 tokens at most), in four modes, interleaved round by
round so that machine noise hits them alike:

- ``dense``: forward, backward, AdamW step;
- ``masked``: the 36 prunable weights behind HP mask parametrizations, with the gradual
  pruner updating the masks at its real rate (every ``--update-every`` steps inside the
  pruning window, as a default-budget point: 336 steps, window 224, update every 11);
- ``masked + KD logits``: ``masked`` plus a no-grad teacher forward and the KL term
  (``--distill logits``, the profile's recipe);
- ``masked + KD layers``: TinyBERT-style hidden-state and attention MSE, which needs eager
  attention for student and teacher (``--distill layers``).

Each round trains every mode for ``--steps`` steps from a fresh model; the figure per mode is
the median over rounds of the loop's wall time per step (model loading and mask attachment
excluded). Prints the machine load, the torch threads and the ratios to dense. Targets
(issue 16): ``masked + KD logits`` at most 1.6x dense; issue 3: ``masked`` at most 1.10x.

    .venv/bin/python benchmarks/masked_step.py [--steps 33] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

MODES = ("dense", "masked", "masked + KD logits", "masked + KD layers")
TARGETS = {"masked": 1.10, "masked + KD logits": 1.6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=33,
                    help="optimiser steps per mode and round (33: two mask updates at "
                         "the real rate of one per 16.5 steps)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--update-every", type=int, default=11)
    ap.add_argument("--modes", default=",".join(MODES),
                    help="comma-separated subset of: " + ", ".join(MODES))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",")]
    unknown = [m for m in modes if m not in MODES]
    if unknown or "dense" not in modes:
        ap.error(f"--modes: unknown {unknown} or no 'dense'; choose from {', '.join(MODES)}")

    from fitformer.data import load_dataset
    from fitformer.models import linear_layers, load_classifier, load_tokenizer, resolve_model
    from fitformer.sparsity.patterns import make_pattern
    from fitformer.sparsity.pruners import GradualMagnitudePruner
    from fitformer.training.loop import DistillConfig, Encoded, TrainConfig, train_classifier

    data = load_dataset("rotten-tomatoes")
    ref = resolve_model("default")
    tok = load_tokenizer(ref)
    train = Encoded(tok, data.train.subset(32 * args.steps), 64)
    config = TrainConfig(max_steps=args.steps, batch_size=32, learning_rate=5e-5,
                         warmup_ratio=0.0, checkpoint_every=10**9,
                         checkpoint_seconds=float("inf"))
    hp = make_pattern("hp")

    def run(mode: str) -> float:
        torch.manual_seed(0)
        net = load_classifier(ref, data.label_names)
        hooks, teacher, distill = [], None, None
        if mode != "dense":
            final = {i.name: hp.plan(i.shape, 0.8) for i in linear_layers(net) if i.prunable}
            hooks = [GradualMagnitudePruner(hp, final, update_every=args.update_every)]
        if "KD" in mode:
            teacher = load_classifier(ref, data.label_names)
            distill = DistillConfig("layers" if "layers" in mode else "logits", 2.0, 0.9)
        result = train_classifier(net, train, config, hooks=hooks, description=mode,
                                  log=lambda _msg: None, teacher=teacher, distill=distill)
        return result.wall_time_s / result.steps * 1e3

    per_mode: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for m in modes:
            per_mode[m].append(run(m))
    ms = {m: statistics.median(v) for m, v in per_mode.items()}
    result = {"step_ms": ms, "ratio_to_dense": {m: ms[m] / ms["dense"] for m in modes},
              "targets": {m: t for m, t in TARGETS.items() if m in modes},
              "steps": args.steps, "rounds": args.rounds, "update_every": args.update_every,
              "load_avg_1min": os.getloadavg()[0], "cpus": os.cpu_count(),
              "threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine load (1 min): {result['load_avg_1min']:.2f} on {result['cpus']} CPUs, "
          f"torch threads {result['threads']}; {args.rounds} rounds x {args.steps} steps")
    for m in modes:
        target = TARGETS.get(m)
        print(f"{m:20s} {ms[m]:8.1f} ms/step  {ms[m] / ms['dense']:5.2f}x dense"
              + (f"  (target <= {target:.2f})" if target else ""))


if __name__ == "__main__":
    main()
