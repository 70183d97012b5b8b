"""The training and evaluation loop for sequence classification (plain PyTorch).

One loop serves the dense fine-tune and, through :class:`TrainHook`, the prune-and-fine-tune
runs of later stages (a hook sees every optimiser step and may change the model, e.g. apply
masks). Batches are padded dynamically to their longest sequence (inputs are truncated to
``max_length`` tokens), which is exact for BERT-style models with attention masks.

Resuming: every ``checkpoint_every`` steps, every ``checkpoint_seconds`` of wall time, at
the end of training and on Ctrl-C, the model, optimiser, scheduler, RNG and hook states of
the last whole step are written with ``torch.save`` to a checkpoint file (atomically: a
temporary file, flushed to disk, then renamed over it), loaded back with
``weights_only=True``; the data order is a function of (seed, epoch), so a resumed run
replays the same batches and ends with the same weights as an uninterrupted one.

Ctrl-C (SIGINT): while :func:`train_classifier` runs in the main thread, a SIGINT raises
:class:`TrainingInterrupted` (a ``KeyboardInterrupt``) within a fraction of a second, also
in the middle of a backward pass (one C++ call that never looks at signals; hooks on the
parameters' gradients let Python react between layers). A SIGINT during the optimiser update
and the step's hooks is deferred until they finish, so the saved state is always that of a
whole step. A second Ctrl-C while that checkpoint is written stops the write; the file
then keeps its previous content. SIGTERM (``kill``, a batch scheduler's or Ray's stop) is
handled the same way, so a background job, which a non-interactive shell starts with
SIGINT ignored, still checkpoints when it is stopped.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from fitformer.data.classification import TextSplit
from fitformer.signals import sigterm_is_ours
from fitformer.training.progress import StepReporter


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
        checkpoint_seconds: seconds of wall time after which the next finished step is
            checkpointed even if ``checkpoint_every`` steps have not passed.

    ``checkpoint_every`` and ``checkpoint_seconds`` decide when state is saved, not what is
    trained, so they are not part of a run key (:meth:`as_key`).
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
    checkpoint_seconds: float = 120.0

    def total_steps(self, n_train: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * math.ceil(n_train / self.batch_size)))

    def as_key(self) -> dict:
        d = asdict(self)
        d.pop("checkpoint_every")
        d.pop("checkpoint_seconds")
        return d


DISTILL_MODES = ("none", "logits", "layers")
#: Most augmented copies per training sentence: TinyBERT used 20 (Jiao et al. 2020); 100
#: already makes an epoch of Rotten Tomatoes a million sentences.
MAX_AUGMENT = 100


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

    With ``augment`` > 0 the training set also holds that many noisy copies of every
    training sentence (:mod:`fitformer.data.augment`, Tang et al. 2019 / TinyBERT's data
    augmentation); a copy has no label (``-100``), so only the distillation terms train on
    it, and the task loss averages over the labelled sentences of the batch.

    Attributes:
        mode: ``none``, ``logits`` or ``layers``.
        temperature: ``T`` > 0.
        alpha: weight of the distillation term in [0, 1].
        layer_weight: weight of the hidden-state and attention MSE terms (``layers``).
        augment: noisy copies per training sentence (0: none); one epoch then passes over
            ``(1 + augment)`` times as many sentences.
    """

    mode: str = "none"
    temperature: float = 2.0
    alpha: float = 0.5
    layer_weight: float = 1.0
    augment: int = 0

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
        if isinstance(self.augment, bool) or not isinstance(self.augment, int) \
                or not 0 <= self.augment <= MAX_AUGMENT:
            raise FitformerError(f"--distill-augment {self.augment!r} must be a whole number "
                                 f"from 0 to {MAX_AUGMENT} (noisy copies per training "
                                 "sentence, e.g. 3; TinyBERT used 20).")
        if self.augment and self.mode == "none":
            raise FitformerError("--distill-augment labels its copies with the teacher; "
                                 "give --distill logits (or layers) with it.")

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
        if not self.augment:
            d.pop("augment")  # keys of runs made before augmentation existed stay the same
        else:
            from fitformer.data.augment import AugmentRules

            d["augment_rules"] = AugmentRules().as_key()
        return d


def distillation_loss(student_out, teacher_out, labels: torch.Tensor,
                      attention_mask: torch.Tensor | None, cfg: DistillConfig
                      ) -> tuple[torch.Tensor, dict[str, float]]:
    """The distillation loss of :class:`DistillConfig` for one batch.

    Args:
        student_out, teacher_out: model outputs with ``logits`` ``(batch, classes)``
            (float32); for ``layers`` also ``hidden_states`` (tuples of ``(batch, seq,
            hidden)``) and ``attentions`` (``(batch, heads, seq, seq)``).
        labels: int64 ``(batch,)``; ``-100`` marks an unlabelled (augmented) sentence, which
            only the distillation terms see.
        attention_mask: ``(batch, seq)`` 0/1, excludes padding from the layer terms.

    Returns:
        ``(loss, parts)``: the scalar loss and its parts (``ce``, ``kl``, ``hidden``,
        ``attention``) as floats for logging.
    """
    import torch.nn.functional as F

    T = cfg.temperature
    labelled = labels >= 0
    if bool(labelled.all()):
        ce = F.cross_entropy(student_out.logits, labels)
    elif bool(labelled.any()):
        ce = F.cross_entropy(student_out.logits[labelled], labels[labelled])
    else:
        ce = student_out.logits.sum() * 0.0
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


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "norm" in name.lower()
         else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _no_op(_tensor: torch.Tensor) -> None:
    return None


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or ``kill`` (SIGTERM) stopped :func:`train_classifier`; raised after
    the state of the last whole step was checkpointed. Rerunning the same training resumes
    from that step.

    Attributes:
        description: the run's progress label, e.g. ``dense fine-tune (tiny)``.
        step: optimiser steps completed when training stopped.
        total: optimiser steps of the whole run.
        checkpoint: the resume file, ``None`` when the run keeps none.
        saved_step: the step whose state ``checkpoint`` holds (``step`` unless a second
            Ctrl-C stopped the write); 0 when there is no checkpoint file.
        signum: the signal that stopped it (``signal.SIGINT`` or ``signal.SIGTERM``); the
            CLI exits with ``128 + signum`` (130 or 143), the shell convention.
    """

    def __init__(self, description: str, step: int, total: int, checkpoint: Path | None,
                 saved_step: int, signum: int = signal.SIGINT):
        self.description, self.step, self.total = description, step, total
        self.checkpoint, self.saved_step, self.signum = checkpoint, saved_step, int(signum)
        if checkpoint is None:
            saved = "this run keeps no checkpoint"
        elif saved_step:
            saved = f"steps 1-{saved_step} are saved in {checkpoint}"
        else:
            saved = "no step had finished, nothing to save"
        by = "" if self.signum == signal.SIGINT else f" by {signal.Signals(self.signum).name}"
        super().__init__(f"{description} stopped{by} after step {step} of {total}; {saved}")


class _StopGuard:
    """Stop-signal handling of one training run (a context manager).

    Inside it, a SIGINT (Ctrl-C) or SIGTERM (``kill``, a batch scheduler's or Ray's stop)
    raises ``KeyboardInterrupt`` at once, except within :meth:`critical`, where it is
    deferred until the block ends; :attr:`signum` tells a signal from a
    ``KeyboardInterrupt`` raised by code. It only acts in the main thread (where Python runs
    signal handlers). It keeps an inherited SIGINT ``SIG_IGN`` (a job started in the
    background by a non-interactive shell ignores Ctrl-C, by POSIX convention: such a job is
    stopped with SIGTERM, which checkpoints too) and a SIGTERM handler some other code
    installed (the CLI's :func:`fitformer.signals.raise_on_sigterm` is replaced while the
    loop runs); the previous handlers are restored on exit.
    """

    def __init__(self):
        self.signum: int | None = None
        self._depth = 0
        self._previous: dict[int, object] = {}

    @property
    def signalled(self) -> bool:
        """Whether a stop signal arrived inside the guard."""
        return self.signum is not None

    def __enter__(self) -> _StopGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(signum)
                if signum == signal.SIGINT:
                    ours = previous not in (None, signal.SIG_IGN)
                else:
                    ours = sigterm_is_ours(previous)
                if ours:
                    self._previous[signum] = previous
                    signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        if self._depth == 0:
            raise KeyboardInterrupt

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A block a stop signal must not cut in two; a signal received inside it raises
        ``KeyboardInterrupt`` when it ends."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self.signalled and self._depth == 0:
            raise KeyboardInterrupt


def save_atomic(state: dict, path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically: into ``<path>.tmp`` in the same
    folder, flushed to disk (``fsync``), then renamed over ``path``. If the write stops
    (Ctrl-C, a full disk), ``path`` keeps its previous content and the temporary file is
    removed; the exception propagates.

    Raises:
        OSError: the folder is not writable or the disk is full.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        checkpoint: file for resume state; if it exists the run resumes from it. Written
            every ``config.checkpoint_every`` steps, after ``config.checkpoint_seconds`` of
            wall time, at the end and on Ctrl-C (see the module docstring).
        description: progress label.
        log: receives the resume message and, when no terminal shows the progress bar
            (CI, logs), the step lines of :class:`~fitformer.training.progress.StepReporter`
            (the first and last step, and every 30 s or 5 % of the steps, whichever comes
            first).
        teacher: the model to distil from (evaluated in eval mode, no gradients); needed
            when ``distill`` is enabled.
        distill: :class:`DistillConfig`; ``None`` or mode ``none`` trains on the labels.

    Returns:
        :class:`TrainResult` with the per-step losses.

    Raises:
        TrainingInterrupted: Ctrl-C (SIGINT) or SIGTERM; the last whole step was
            checkpointed first (within about a second plus the time to write the
            checkpoint).
        FitformerError: the training loss became non-finite.
        ValueError: ``distill`` is enabled without a ``teacher``.
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

    # The step the checkpoint file holds (None: no file), and the RNG state at the last step
    # boundary: a Ctrl-C in the middle of a step must save the state before that step.
    saved_step = result.steps if state is not None else None
    rng = torch.get_rng_state()
    last_save = time.monotonic()

    def save_checkpoint() -> None:
        nonlocal saved_step, last_save
        if checkpoint is None:
            return
        save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": rng,
                     "hooks": [h.state_dict() for h in hooks], "step": result.steps,
                     "losses": result.losses}, checkpoint)
        # The step it holds, readable without loading it (fitformer.training.runs.
        # saved_steps: the plan line of select / profile counts only the steps left).
        from fitformer.training.runs import write_json

        write_json(checkpoint.with_suffix(".json"), {"step": result.steps, "total": total})
        saved_step = result.steps
        last_save = time.monotonic()

    guard = _StopGuard()
    # Python runs signal handlers only between bytecodes; these hooks run Python between the
    # layers of the backward pass, so a Ctrl-C does not wait for a whole backward pass.
    grad_hooks = [p.register_post_accumulate_grad_hook(_no_op)
                  for p in model.parameters() if p.requires_grad]
    model.train()
    start = time.perf_counter()
    seen = 0
    try:
        with guard, StepReporter(description, total, start_step=result.steps,
                                 console=console, log=log) as progress:
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
                with guard.critical():
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
                    rng = torch.get_rng_state()
                    if result.steps < total and (
                            result.steps % config.checkpoint_every == 0
                            or time.monotonic() - last_save >= config.checkpoint_seconds):
                        save_checkpoint()
                window = result.losses[-20:]
                progress.step(result.steps, sum(window) / len(window))
            # Training is done: keep it if the evaluation that follows is interrupted.
            with guard.critical():
                if saved_step != result.steps:
                    save_checkpoint()
    except KeyboardInterrupt:
        if not guard.signalled:
            raise  # raised by code (e.g. a hook), perhaps mid-step: nothing is saved
        optimizer.zero_grad(set_to_none=True)  # a cut-off backward pass's gradients
        if checkpoint is not None and result.steps > 0 and saved_step != result.steps:
            try:
                save_checkpoint()
            except KeyboardInterrupt:
                pass  # a second Ctrl-C: the file keeps its previous (whole) state
        raise TrainingInterrupted(description, result.steps, total, checkpoint,
                                  saved_step or 0, guard.signum) from None
    finally:
        for h in grad_hooks:
            h.remove()
    result.wall_time_s = time.perf_counter() - start
    result.train_examples_per_s = seen / result.wall_time_s if result.wall_time_s else 0.0
    model.eval()
    return result
