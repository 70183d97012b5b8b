"""Evaluation of classifiers: accuracy and loss, at fp32 and in the fixed-point arithmetic of
the FPGA datapath (design.md §4)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fitformer.models.fixed_point import PRECISIONS, calibrate, fixed_point
from fitformer.training.loop import Encoded, _console

CALIBRATION_SENTENCES = 256


@dataclass(frozen=True)
class EvalResult:
    """Accuracy (fraction correct, 0-1) and mean cross-entropy loss (nats) on ``n`` examples;
    ``predicted_classes``: distinct classes predicted; ``correct``: per example, in the
    split's order, whether the prediction was right (for paired bootstraps)."""

    accuracy: float
    loss: float
    n: int
    examples_per_s: float
    predicted_classes: int = 0
    correct: tuple[bool, ...] = ()


def majority_rate(labels) -> float:
    """Share of the most frequent label (the accuracy of always predicting it), 0-1."""
    labels = list(int(x) for x in labels)
    if not labels:
        return 0.0
    return max(labels.count(v) for v in set(labels)) / len(labels)


def collapse_reason(accuracy: float | None, majority: float | None,
                    predicted_classes: int | None) -> str | None:
    """The majority-class rule (design.md §9, defined here once and shared by the pruning
    collapse guard and select): a run whose dev predictions are a single class, or whose
    dev accuracy is at or below the majority-class rate of the dev split, has collapsed.
    Returns the reason, or ``None`` when the run has not collapsed (or nothing is known)."""
    if predicted_classes is not None and predicted_classes == 1:
        return "every dev prediction is one class"
    if accuracy is not None and majority is not None and accuracy <= majority + 1e-12:
        return (f"dev accuracy {accuracy:.4f} is at or below the majority-class rate "
                f"{majority:.4f}")
    return None


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
    right = [False] * len(data)
    classes: set[int] = set()
    start = time.perf_counter()
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        batch = data.batch(idx)
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
        pred = logits.argmax(-1)
        hit = (pred == labels).tolist()
        correct += int(sum(hit))
        classes.update(pred.tolist())
        for i, h in zip(idx, hit, strict=True):
            right[i] = bool(h)
    elapsed = time.perf_counter() - start
    model.train(was_training)
    n = len(data)
    return EvalResult(correct / n if n else 0.0, loss_sum / n if n else 0.0, n,
                      n / elapsed if elapsed else 0.0, len(classes), tuple(right))


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
        "n": {split: n}, "majority_rate": {split: rate}, "predicted_classes": {split:
        {precision: k}}, "correct": {split: {precision: "0110..."}}}``; accuracies are
        fractions 0-1, losses mean nats; ``correct`` marks each example in split order.
    """
    # Evaluation takes a while (a pass per split and precision): say why it is busy.
    _console().print(f"evaluating {'/'.join(splits)} at {', '.join(precisions)} ...",
                     highlight=False)
    cal = None
    if any(p != "fp32" for p in precisions):
        cal = calibrate(model, calibration_batches(calibration_data))
    acc = {s: {} for s in splits}
    loss = {s: {} for s in splits}
    classes = {s: {} for s in splits}
    right = {s: {} for s in splits}
    for p in precisions:
        with fixed_point(model, p, cal):
            for s, data in splits.items():
                r = evaluate_classifier(model, data)
                acc[s][p], loss[s][p] = r.accuracy, r.loss
                classes[s][p] = r.predicted_classes
                right[s][p] = "".join("1" if c else "0" for c in r.correct)
    return {"accuracy": acc, "loss": loss, "n": {s: len(d) for s, d in splits.items()},
            "majority_rate": {s: majority_rate(d.labels.tolist()) for s, d in splits.items()},
            "predicted_classes": classes, "correct": right}
