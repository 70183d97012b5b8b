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
    split's order, whether the prediction was right (for paired bootstraps);
    ``predictions``: per example, in the split's order, the predicted class id."""

    accuracy: float
    loss: float
    n: int
    examples_per_s: float
    predicted_classes: int = 0
    correct: tuple[bool, ...] = ()
    predictions: tuple[int, ...] = ()


#: The classification metrics an accuracy constraint can apply to, and for each the keys of
#: ``metrics.json`` holding its scores (``{split: {precision: score}}``) and its
#: majority-class baseline (``{split: score}``).
METRICS = {"accuracy": ("accuracy", "majority_rate"),
           "macro_f1": ("macro_f1", "majority_macro_f1")}
#: How messages name each metric.
METRIC_LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "bleu": "BLEU"}


def majority_rate(labels) -> float:
    """Share of the most frequent label (the accuracy of always predicting it), 0-1."""
    labels = list(int(x) for x in labels)
    if not labels:
        return 0.0
    return max(labels.count(v) for v in set(labels)) / len(labels)


def macro_f1(labels, predictions) -> float:
    """Macro-averaged F1 (0-1): the unweighted mean over classes of ``2 TP / (2 TP + FP +
    FN)``, over the classes that occur in ``labels`` or ``predictions``; a class with no
    true and no predicted example does not count, and a class's F1 is 0 when it has
    neither precision nor recall (scikit-learn's ``f1_score(average="macro",
    zero_division=0)``, Pedregosa et al. 2011; computed with numpy, scikit-learn is not a
    dependency).

    Args:
        labels, predictions: class ids, one per example, same length.

    Raises:
        ValueError: the lengths differ.
    """
    import numpy as np

    y, p = np.asarray(list(labels), dtype=np.int64), np.asarray(list(predictions),
                                                                dtype=np.int64)
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    if y.size == 0:
        return 0.0
    scores = []
    for c in np.union1d(y, p):
        tp = int(np.sum((y == c) & (p == c)))
        wrong = int(np.sum((y == c) != (p == c)))          # FP + FN
        scores.append(2 * tp / (2 * tp + wrong) if tp or wrong else 0.0)
    return float(np.mean(scores))


def majority_baseline(labels, metric: str = "accuracy") -> float:
    """The score of always predicting the most frequent label, in ``metric`` (0-1): the
    majority-class rate for ``accuracy``; for ``macro_f1``, ``2 r / (1 + r) / K`` with
    ``r`` the majority rate and ``K`` the classes in ``labels`` (the majority class's F1;
    every other class scores 0).

    Raises:
        ValueError: an unknown metric.
    """
    labels = [int(x) for x in labels]
    if metric == "accuracy":
        return majority_rate(labels)
    if metric != "macro_f1":
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    if not labels:
        return 0.0
    top = max(sorted(set(labels)), key=labels.count)
    return macro_f1(labels, [top] * len(labels))


def collapse_reason(accuracy: float | None, majority: float | None,
                    predicted_classes: int | None, metric: str = "accuracy") -> str | None:
    """The majority-class rule (design.md §9, defined here once and shared by the pruning
    collapse guard and select): a run whose dev predictions are a single class, or whose
    dev score is at or below the majority-class baseline of the dev split, has collapsed.

    Args:
        accuracy: the dev score in ``metric`` (accuracy, or macro-F1).
        majority: the majority-class baseline in the same metric
            (:func:`majority_baseline`: the majority-class rate for accuracy).
        predicted_classes: distinct classes predicted on dev.
        metric: ``accuracy`` or ``macro_f1``.

    Returns the reason, or ``None`` when the run has not collapsed (or nothing is known)."""
    if predicted_classes is not None and predicted_classes == 1:
        return "every dev prediction is one class"
    if accuracy is not None and majority is not None and accuracy <= majority + 1e-12:
        if metric == "accuracy":
            return (f"dev accuracy {accuracy:.4f} is at or below the majority-class rate "
                    f"{majority:.4f}")
        return (f"dev {METRIC_LABELS.get(metric, metric)} {accuracy:.4f} is at or below "
                f"the majority-class baseline {majority:.4f} (the score of always "
                "answering the most frequent class)")
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
    predicted = [0] * len(data)
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
        for i, h, c in zip(idx, hit, pred.tolist(), strict=True):
            right[i] = bool(h)
            predicted[i] = int(c)
    elapsed = time.perf_counter() - start
    model.train(was_training)
    n = len(data)
    return EvalResult(correct / n if n else 0.0, loss_sum / n if n else 0.0, n,
                      n / elapsed if elapsed else 0.0, len(classes), tuple(right),
                      tuple(predicted))


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
        {precision: k}}, "correct": {split: {precision: "0110..."}}, "macro_f1": {split:
        {precision: f1}}, "majority_macro_f1": {split: f1}, "predictions": {split:
        {precision: "1,0,2,..."}}}``; accuracies and macro-F1 (:func:`macro_f1`) are
        fractions 0-1, losses mean nats; ``correct`` marks each example in split order,
        ``predictions`` gives its predicted class id.
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
    f1 = {s: {} for s in splits}
    predicted = {s: {} for s in splits}
    for p in precisions:
        with fixed_point(model, p, cal):
            for s, data in splits.items():
                r = evaluate_classifier(model, data)
                acc[s][p], loss[s][p] = r.accuracy, r.loss
                classes[s][p] = r.predicted_classes
                right[s][p] = "".join("1" if c else "0" for c in r.correct)
                f1[s][p] = macro_f1(data.labels.tolist(), r.predictions)
                predicted[s][p] = ",".join(map(str, r.predictions))
    return {"accuracy": acc, "loss": loss, "n": {s: len(d) for s, d in splits.items()},
            "majority_rate": {s: majority_rate(d.labels.tolist()) for s, d in splits.items()},
            "predicted_classes": classes, "correct": right, "macro_f1": f1,
            "majority_macro_f1": {s: majority_baseline(d.labels.tolist(), "macro_f1")
                                  for s, d in splits.items()},
            "predictions": predicted}
