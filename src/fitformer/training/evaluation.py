"""Evaluation of classifiers: accuracy and loss, at fp32 and in the fixed-point arithmetic of
the FPGA datapath (design.md §4)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fitformer.models.fixed_point import PRECISIONS, calibrate, fixed_point
from fitformer.training.loop import Encoded

CALIBRATION_SENTENCES = 256


@dataclass(frozen=True)
class EvalResult:
    """Accuracy (fraction correct, 0-1) and mean cross-entropy loss (nats) on ``n`` examples."""

    accuracy: float
    loss: float
    n: int
    examples_per_s: float


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, data: Encoded, batch_size: int = 128
                        ) -> EvalResult:
    """Accuracy and mean loss of ``model`` on ``data`` (eval mode, no dropout).

    Batches are formed from length-sorted examples so padding is minimal; the result does
    not depend on the order.
    """
    was_training = model.training
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.features[i]["input_ids"]))
    correct, loss_sum = 0, 0.0
    start = time.perf_counter()
    for b in range(0, len(order), batch_size):
        batch = data.batch(order[b:b + batch_size])
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(-1) == labels).sum())
    elapsed = time.perf_counter() - start
    model.train(was_training)
    n = len(data)
    return EvalResult(correct / n, loss_sum / n, n, n / elapsed if elapsed else 0.0)


def calibration_batches(train: Encoded, n: int = CALIBRATION_SENTENCES, batch_size: int = 64
                        ) -> list[dict[str, torch.Tensor]]:
    """The first ``n`` training sentences (design.md §4: 256), tokenised in batches."""
    idx = list(range(min(n, len(train))))
    return [train.batch(idx[i:i + batch_size]) for i in range(0, len(idx), batch_size)]


def accuracy_at_precisions(model: torch.nn.Module, splits: dict[str, Encoded],
                           calibration_data: Encoded,
                           precisions: Sequence[str] = PRECISIONS) -> dict[str, dict]:
    """Accuracy and loss of every split at every precision.

    Args:
        model: an fp32 classifier (masks already squashed or applied).
        splits: split name -> tokenised data, e.g. ``{"dev": ..., "test": ...}``.
        calibration_data: activations' ``max_abs`` come from its first 256 sentences.
        precisions: subset of ``fp32``, ``fx16``, ``fx8``.

    Returns:
        ``{"accuracy": {split: {precision: acc}}, "loss": {split: {precision: loss}},
        "n": {split: n}}``; accuracies are fractions 0-1, losses mean nats.
    """
    cal = None
    if any(p != "fp32" for p in precisions):
        cal = calibrate(model, calibration_batches(calibration_data))
    acc = {s: {} for s in splits}
    loss = {s: {} for s in splits}
    for p in precisions:
        with fixed_point(model, p, cal):
            for s, data in splits.items():
                r = evaluate_classifier(model, data)
                acc[s][p], loss[s][p] = r.accuracy, r.loss
    return {"accuracy": acc, "loss": loss, "n": {s: len(d) for s, d in splits.items()}}
