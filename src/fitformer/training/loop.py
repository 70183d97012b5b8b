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


DISTILL_MODES = ("none", "logits", "layers")


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation from a teacher (the dense fine-tune) while training.

    The training loss becomes

        ``(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(p_teacher^T || p_student^T)``

    with ``p^T = softmax(logits / T)`` (Hinton, Vinyals & Dean, "Distilling the Knowledge
    in a Neural Network", 2015; the ``T^2`` keeps the gradient scale independent of ``T``).
    ``layers`` adds, TinyBERT style (Jiao et al., "TinyBERT", Findings of EMNLP 2020), the
    mean squared error between the student's and the teacher's hidden states (embedding
    output and every layer, padding excluded) and attention probabilities, each averaged
    over layers, weighted by ``layer_weight``. It needs eager attention (slower than SDPA).

    Attributes:
        mode: ``none``, ``logits`` or ``layers``.
        temperature: ``T`` > 0.
        alpha: weight of the distillation term in [0, 1].
        layer_weight: weight of the hidden-state and attention MSE terms (``layers``).
    """

    mode: str = "none"
    temperature: float = 2.0
    alpha: float = 0.5
    layer_weight: float = 1.0

    def __post_init__(self):
        from fitformer.errors import FitformerError

        if self.mode not in DISTILL_MODES:
            raise FitformerError(f"--distill {self.mode!r}: choose from "
                                 f"{', '.join(DISTILL_MODES)}.")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise FitformerError(f"--distill-temperature {self.temperature} must be > 0 "
                                 "(e.g. 2).")
        if not (math.isfinite(self.alpha) and 0.0 <= self.alpha <= 1.0):
            raise FitformerError(f"--distill-alpha {self.alpha} must be in [0, 1] (e.g. 0.5).")
        if not (math.isfinite(self.layer_weight) and self.layer_weight >= 0):
            raise FitformerError(f"layer_weight {self.layer_weight} must be >= 0.")

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def as_key(self) -> dict | None:
        """The part of a run key (``None`` without distillation)."""
        if not self.enabled:
            return None
        d = asdict(self)
        if self.mode != "layers":
            d.pop("layer_weight")
        return d


def distillation_loss(student_out, teacher_out, labels: torch.Tensor,
                      attention_mask: torch.Tensor | None, cfg: DistillConfig
                      ) -> tuple[torch.Tensor, dict[str, float]]:
    """The distillation loss of :class:`DistillConfig` for one batch.

    Args:
        student_out, teacher_out: model outputs with ``logits`` ``(batch, classes)``
            (float32); for ``layers`` also ``hidden_states`` (tuples of ``(batch, seq,
            hidden)``) and ``attentions`` (``(batch, heads, seq, seq)``).
        labels: int64 ``(batch,)``.
        attention_mask: ``(batch, seq)`` 0/1, excludes padding from the layer terms.

    Returns:
        ``(loss, parts)``: the scalar loss and its parts (``ce``, ``kl``, ``hidden``,
        ``attention``) as floats for logging.
    """
    import torch.nn.functional as F

    T = cfg.temperature
    ce = F.cross_entropy(student_out.logits, labels)
    kl = F.kl_div(F.log_softmax(student_out.logits / T, dim=-1),
                  F.log_softmax(teacher_out.logits / T, dim=-1),
                  reduction="batchmean", log_target=True) * T * T
    loss = (1.0 - cfg.alpha) * ce + cfg.alpha * kl
    parts = {"ce": float(ce.detach()), "kl": float(kl.detach())}
    if cfg.mode == "layers":
        m = (attention_mask.float() if attention_mask is not None
             else torch.ones(student_out.logits.shape[0], 1))
        tokens = m.sum().clamp(min=1.0)
        hid = sum(((s - t) ** 2).mean(-1).mul(m).sum() / tokens
                  for s, t in zip(student_out.hidden_states, teacher_out.hidden_states,
                                  strict=True)) / len(student_out.hidden_states)
        pair = m[:, None, :, None] * m[:, None, None, :]
        att = sum(((s - t) ** 2).mul(pair).sum() / (pair.sum() * s.shape[1]).clamp(min=1.0)
                  for s, t in zip(student_out.attentions, teacher_out.attentions,
                                  strict=True)) / len(student_out.attentions)
        loss = loss + cfg.layer_weight * (hid + att)
        parts.update(hidden=float(hid.detach()), attention=float(att.detach()))
    return loss, parts


def use_eager_attention(model: torch.nn.Module) -> None:
    """Switch a transformers model to eager attention (attention probabilities can be
    returned; SDPA kernels cannot return them)."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:  # older transformers
        model.config._attn_implementation = "eager"


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
                     log: Callable[[str], None] | None = None,
                     teacher: torch.nn.Module | None = None,
                     distill: DistillConfig | None = None) -> TrainResult:
    """Train ``model`` on ``train`` with AdamW and a linear warm-up / decay schedule.

    Args:
        model: a ``transformers`` sequence-classification model (fp32); trained in place.
        train: the tokenised training split.
        config: optimiser and schedule.
        hooks: called after every optimiser step (pruning, masking).
        checkpoint: file for resume state; if it exists the run resumes from it.
        description: progress-bar label.
        log: receives progress lines when no terminal shows the bar (CI, logs).
        teacher: the model to distil from (evaluated in eval mode, no gradients); needed
            when ``distill`` is enabled.
        distill: :class:`DistillConfig`; ``None`` or mode ``none`` trains on the labels.

    Returns:
        :class:`TrainResult` with the per-step losses.
    """
    from transformers import get_linear_schedule_with_warmup

    distill = distill if distill is not None and distill.enabled else None
    if distill is not None and teacher is None:
        raise ValueError("distillation needs a teacher model")
    layers = distill is not None and distill.mode == "layers"
    if distill is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        if layers:
            use_eager_attention(teacher)
            use_eager_attention(model)
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
            if distill is None:
                out = model(**batch)
                loss = out.loss
            else:
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                extra = {"output_hidden_states": True, "output_attentions": True} \
                    if layers else {}
                with torch.no_grad():
                    t_out = teacher(**inputs, **extra)
                out = model(**inputs, **extra)
                loss, _ = distillation_loss(out, t_out, batch["labels"],
                                            batch.get("attention_mask"), distill)
            if not torch.isfinite(loss):
                from fitformer.errors import FitformerError

                raise FitformerError(
                    f"{description}: the training loss is {float(loss)} at step "
                    f"{result.steps + 1}; nothing was cached. Check the model's dtype "
                    "(fitformer trains in float32) and the learning rate.")
            loss.backward()
            for hook in hooks:
                hook.before_optimizer_step(model, result.steps + 1, total)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            result.steps += 1
            seen += len(idx)
            result.losses.append(float(loss.detach()))
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
