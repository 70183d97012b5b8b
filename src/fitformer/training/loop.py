"""The training and evaluation loop for sequence classification (plain PyTorch).

One loop serves the dense fine-tune and, through :class:`TrainHook`, the prune-and-fine-tune
runs of later stages (a hook sees every optimiser step and may change the model, e.g. apply
masks). Batches are padded dynamically to their longest sequence (inputs are truncated to
``max_length`` tokens), which is exact for BERT-style models with attention masks.

Resuming: every ``checkpoint_every`` steps the model, optimiser, scheduler, RNG and hook
states are written with ``torch.save`` to a checkpoint file, loaded back with
``weights_only=True``; the data order is a function of (seed, epoch), so a resumed run
replays the same batches.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fitformer.data.classification import TextSplit


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule settings of one training run.

    Attributes:
        epochs: passes over the training split (fractions allowed); ignored if ``max_steps``.
        max_steps: exact number of optimiser steps, overriding ``epochs``.
        batch_size: sequences per step.
        learning_rate: AdamW peak learning rate (Loshchilov & Hutter 2019).
        weight_decay: AdamW decoupled weight decay, not applied to biases and layer norms.
        warmup_ratio: fraction of steps of linear warm-up before linear decay to zero.
        max_length: tokens per sequence after truncation.
        seed: seeds the head initialisation, dropout and the data order.
        checkpoint_every: steps between resume checkpoints.
    """

    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = 64
    seed: int = 0
    checkpoint_every: int = 100

    def total_steps(self, n_train: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * math.ceil(n_train / self.batch_size)))

    def as_key(self) -> dict:
        d = asdict(self)
        d.pop("checkpoint_every")
        return d


class TrainHook:
    """Called by :func:`train_classifier` around optimiser steps; subclass and override."""

    def on_train_begin(self, model: torch.nn.Module, total_steps: int) -> None:
        """Before the first step (also on resume, after the state was restored)."""

    def before_optimizer_step(self, model: torch.nn.Module, step: int, total_steps: int
                              ) -> None:
        """After the backward pass of step ``step`` (1-based), before the optimiser uses
        the gradients (e.g. to add a proximal term)."""

    def on_step_end(self, model: torch.nn.Module, step: int, total_steps: int) -> None:
        """After optimiser step ``step`` (1-based)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


@dataclass
class TrainResult:
    """What a training run measured.

    Attributes:
        steps: optimiser steps taken in total (including before a resume).
        losses: training loss (mean cross-entropy, nats) per step.
        train_examples_per_s: training throughput over the steps run in this process.
        wall_time_s: seconds spent training in this process.
        resumed_from_step: step restored from a checkpoint (0 if none).
    """

    steps: int
    losses: list[float] = field(default_factory=list)
    train_examples_per_s: float = 0.0
    wall_time_s: float = 0.0
    resumed_from_step: int = 0


class Encoded:
    """A tokenised split: token ids per example, labels, and batch collation."""

    def __init__(self, tokenizer, split: TextSplit, max_length: int):
        enc = tokenizer(list(split.texts), truncation=True, max_length=max_length)
        self.tokenizer = tokenizer
        self.features = [{k: enc[k][i] for k in enc.keys()} for i in range(len(split))]
        self.labels = torch.tensor(split.labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad([self.features[i] for i in indices], return_tensors="pt")
        batch["labels"] = self.labels[list(indices)]
        return dict(batch)


def _console() -> Console:
    return Console(stderr=True)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TextColumn("eta"),
        TimeRemainingColumn(), console=console, disable=not console.is_terminal,
    )


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "norm" in name.lower()
         else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def train_classifier(model: torch.nn.Module, train: Encoded, config: TrainConfig, *,
                     hooks: Sequence[TrainHook] = (), checkpoint: Path | None = None,
                     description: str = "fine-tune",
                     log: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``model`` on ``train`` with AdamW and a linear warm-up / decay schedule.

    Args:
        model: a ``transformers`` sequence-classification model (fp32); trained in place.
        train: the tokenised training split.
        config: optimiser and schedule.
        hooks: called after every optimiser step (pruning, masking).
        checkpoint: file for resume state; if it exists the run resumes from it.
        description: progress-bar label.
        log: receives progress lines when no terminal shows the bar (CI, logs).

    Returns:
        :class:`TrainResult` with the per-step losses.
    """
    from transformers import get_linear_schedule_with_warmup

    console = _console()
    log = log or (lambda msg: console.print(msg, highlight=False))
    total = config.total_steps(len(train))
    steps_per_epoch = max(1, math.ceil(len(train) / config.batch_size))
    result = TrainResult(steps=0)
    state = None
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        for hook, hs in zip(hooks, state["hooks"], strict=True):
            hook.load_state_dict(hs)
    # Hooks may change the model's structure (mask parametrizations) before the optimiser
    # is built and the saved model state is loaded into it.
    for hook in hooks:
        hook.on_train_begin(model, total)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay),
                                  lr=config.learning_rate)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total), total)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        result.steps = result.resumed_from_step = int(state["step"])
        result.losses = list(state["losses"])
        log(f"{description}: resuming from step {result.steps} of {total} ({checkpoint})")

    def save_checkpoint() -> None:
        if checkpoint is None:
            return
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                 "hooks": [h.state_dict() for h in hooks], "step": result.steps,
                 "losses": result.losses}
        tmp = checkpoint.with_name(checkpoint.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, checkpoint)

    model.train()
    start = time.perf_counter()
    seen = 0
    report_every = max(1, total // 10)
    with _progress(console) as progress:
        task = progress.add_task(description, total=total, completed=result.steps, loss=0.0)
        while result.steps < total:
            epoch, offset = divmod(result.steps, steps_per_epoch)
            order = (train.epoch_order(config.seed, epoch, config.batch_size)
                     if hasattr(train, "epoch_order")
                     else _epoch_order(len(train), config.seed, epoch))
            idx = order[offset * config.batch_size:(offset + 1) * config.batch_size]
            batch = train.batch(idx)
            out = model(**batch)
            out.loss.backward()
            for hook in hooks:
                hook.before_optimizer_step(model, result.steps + 1, total)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            result.steps += 1
            seen += len(idx)
            result.losses.append(float(out.loss.detach()))
            for hook in hooks:
                hook.on_step_end(model, result.steps, total)
            window = result.losses[-20:]
            progress.update(task, advance=1, loss=sum(window) / len(window))
            if progress.disable and (result.steps % report_every == 0 or result.steps == total):
                elapsed = time.perf_counter() - start
                done = result.steps - result.resumed_from_step
                eta = elapsed / done * (total - result.steps)
                log(f"{description}: step {result.steps}/{total} loss "
                    f"{sum(window) / len(window):.4f} elapsed {elapsed:.0f}s eta {eta:.0f}s")
            if result.steps % config.checkpoint_every == 0 and result.steps < total:
                save_checkpoint()
    result.wall_time_s = time.perf_counter() - start
    result.train_examples_per_s = seen / result.wall_time_s if result.wall_time_s else 0.0
    model.eval()
    return result
