"""Per-layer HP split by sensitivity (issue 16, item 4; design.md §3).

HP divides a matrix's density ``d`` between two levels, ``d = d1 * d2``. The global rule
gives every matrix the same split; a per-layer split lets each matrix choose its own among
the pairs on the grid (:meth:`~fitformer.sparsity.patterns.Hierarchical.splits`): ``d2`` a
multiple of ``B / c`` with ``d2 >= d`` and ``d1 = d / d2``. Every matrix keeps the requested
overall density; only its division between the levels changes. ``K1`` rounds down per
layer as with the global rule, so each matrix's achieved sparsity is never below the
request and within one grid step (``d2 * r / M``) of it.

**Sensitivity** of a matrix at a split: the increase in training loss (mean cross-entropy
in nats: per sentence for classification, per target token for translation) when only that
matrix gets one-shot HP masks (magnitude, :meth:`Pattern.mask_from_levels`) at the split,
every other weight unchanged, measured in eval mode (no dropout) on ``sentences`` training
sentences drawn once with the run's seed. This is the one-shot pruning-sensitivity scan of
Han et al. ("Learning both Weights and Connections", NeurIPS 2015, §4) and of the
per-layer analysis in Li et al. ("Pruning Filters for Efficient ConvNets", ICLR 2017,
§4.1), applied here to the level split instead of the layer's sparsity. Each matrix takes
the split of lowest increase (ties: the global split, then the larger ``d2``).

**Chaining**: masks only shrink, so when the model already carries HP masks the candidates
of a matrix are restricted to ``d1`` and ``d2`` at most its source levels, and the one-shot
masks are computed inside the source masks. The source's own ``d2`` always satisfies the
ceiling (``d1 = d / d2_src <= d_src / d2_src = d1_src`` for a request at least as sparse),
so a candidate remains unless that ``d1`` rounds to no block per stripe; then the request
is refused (start from the dense run, or use a smaller block).

**Cost**: one forward pass over the sentences for the baseline, then one per matrix and
candidate (36 matrices x at most ``c / B`` candidates for MiniLM). Transformer blocks that
run before the matrix's block do not change, so their outputs are recorded once and
replayed (about 40% fewer layer evaluations on a 6-layer encoder).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fitformer.errors import FitformerError
from fitformer.sparsity.patterns import Hierarchical

#: Training sentences of the sensitivity scan (a few hundred: design.md §4 uses 256 too).
SENSITIVITY_SENTENCES = 256
#: What the scan measures, recorded with every table.
MEASURE = ("increase in mean training cross-entropy (nats) when only this matrix gets "
           "one-shot HP masks at the split, eval mode")

_TOL = 1e-9
_BLOCK = re.compile(r"^(.*?\.(?:layer|layers|h|block)\.\d+)\.")

Levels = tuple[float, float]


@dataclass(frozen=True)
class SplitScore:
    """One matrix at one candidate split.

    Attributes:
        levels: requested ``(d1, d2)`` (fractions 0-1, ``d1 * d2 = d``).
        counts: ``{"K1": blocks per stripe, "k": weights per bank}``.
        achieved_sparsity: sparsity of the one-shot mask (fraction 0-1).
        loss: mean training cross-entropy with only this matrix masked (nats).
        loss_increase: ``loss`` minus the unmasked baseline (nats; may be slightly
            negative).
    """

    levels: Levels
    counts: dict[str, int]
    achieved_sparsity: float
    loss: float
    loss_increase: float

    def to_json(self) -> dict:
        return {"d1": self.levels[0], "d2": self.levels[1], **self.counts,
                "achieved_sparsity": self.achieved_sparsity, "loss": self.loss,
                "loss_increase": self.loss_increase}


@dataclass(frozen=True)
class SensitivityTable:
    """The scan: baseline loss and every matrix's candidate scores.

    Attributes:
        sparsity: the requested sparsity (fraction 0-1).
        base_loss: mean training cross-entropy of the model as given (nats).
        sentences: sentences the losses are measured on.
        seed: seed of the sentence draw.
        scores: module name -> its candidates' :class:`SplitScore`, in increasing ``d2``.
    """

    sparsity: float
    base_loss: float
    sentences: int
    seed: int
    scores: dict[str, tuple[SplitScore, ...]]

    def choose(self, default: Levels | None = None) -> dict[str, Levels]:
        """Module name -> the split of lowest loss increase; ties go to ``default`` (the
        global split), then to the larger ``d2``."""
        def rank(s: SplitScore):
            is_default = default is not None and all(
                abs(a - b) < _TOL for a, b in zip(s.levels, default, strict=True))
            return (s.loss_increase, not is_default, -s.levels[1])

        return {name: min(cands, key=rank).levels for name, cands in self.scores.items()}

    def to_json(self, chosen: dict[str, Levels]) -> dict:
        """The table as recorded in ``pruning.json`` (``sensitivity``)."""
        return {
            "measure": MEASURE, "sentences": self.sentences, "seed": self.seed,
            "requested_sparsity": self.sparsity, "base_loss": self.base_loss,
            "layers": {name: {"chosen": {"d1": chosen[name][0], "d2": chosen[name][1]},
                              "candidates": [s.to_json() for s in cands]}
                       for name, cands in self.scores.items()},
        }


def split_candidates(pattern: Hierarchical, shape: tuple[int, int], sparsity: float,
                     ceiling: Sequence[float] | None = None) -> tuple[Levels, ...]:
    """The splits a ``(M, N)`` matrix may take at ``sparsity``: those of
    :meth:`Hierarchical.splits` that keep at least one block per stripe and one weight per
    bank, and, when ``ceiling`` (the source's ``(d1, d2)`` of a chained run) is given, whose
    ``d1`` and ``d2`` are both at most the ceiling's (masks only shrink).

    Raises:
        FitformerError: no split qualifies (the matrix is too small for the block, or the
            ceiling is denser-split than the request allows), naming the fix.
    """
    d = 1.0 - sparsity
    out = []
    for levels in pattern.splits(sparsity):
        counts = pattern.counts(shape, levels)
        if sparsity < 1.0 and min(counts.values()) == 0:
            continue
        if ceiling is not None and any(a > b + _TOL for a, b in zip(levels, ceiling,
                                                                       strict=True)):
            continue
        out.append(levels)
    if not out:
        why, fix = "", ""
        if ceiling is not None:
            why = f" within the source levels (d1, d2) <= {tuple(ceiling)}"
            fix = ", or start from the dense run"
        raise FitformerError(
            f"{shape[0]}x{shape[1]}: no HP split of density {d:.3g}{why} keeps a block per "
            f"stripe and a weight per bank; use a smaller --block or a lower --sparsity{fix}.")
    return tuple(out)


def sentence_indices(n_examples: int, sentences: int, seed: int) -> list[int]:
    """The first ``sentences`` of a permutation of ``range(n_examples)`` seeded by ``seed``
    (the whole split when it is smaller)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_examples, generator=g)[:sentences].tolist()


def _length(data, i: int) -> int:
    if hasattr(data, "features"):  # classification (training.loop.Encoded)
        return len(data.features[i]["input_ids"])
    return len(data.sources[i]) + len(data.targets[i])  # translation (EncodedPairs)


def _weight(labels: torch.Tensor) -> int:
    """What a batch's mean loss averages over: sentences, or target tokens (-100 = pad)."""
    return int((labels != -100).sum()) if labels.ndim > 1 else int(labels.numel())


def _block_of(name: str) -> str | None:
    m = _BLOCK.match(name)
    return m.group(1) if m else None


class _Scan:
    """Batches of the scan, the forward loss, and replay of unchanged blocks."""

    def __init__(self, net: torch.nn.Module, data, indices: list[int], blocks: set[str],
                 batch_size: int):
        self.net = net
        order = sorted(indices, key=lambda i: _length(data, i))  # little padding
        self.batches = [data.batch(order[b:b + batch_size])
                        for b in range(0, len(order), batch_size)]
        self.blocks = sorted(blocks)
        self.outputs: dict[str, list] = {b: [] for b in self.blocks}
        self.first_call: list[str] = []
        self.replayable = False
        self.current = 0

    def _forward_loss(self) -> float:
        total = weight = 0.0
        for i, batch in enumerate(self.batches):
            self.current = i
            loss = self.net(**batch).loss
            w = _weight(batch["labels"])
            total += float(loss) * w
            weight += w
        return total / weight

    def record(self) -> float:
        """The baseline loss; records every block's output per batch for replay (only when
        each block runs exactly once per forward pass)."""
        calls: dict[str, int] = {}

        def hook(name):
            def fn(module, args, output):
                calls[name] = calls.get(name, 0) + 1
                if name not in self.first_call:
                    self.first_call.append(name)
                self.outputs[name].append(output)
            return fn

        handles = [self.net.get_submodule(b).register_forward_hook(hook(b))
                   for b in self.blocks]
        try:
            base = self._forward_loss()
        finally:
            for h in handles:
                h.remove()
        n = len(self.batches)
        self.replayable = all(calls.get(b, 0) == n for b in self.blocks)
        if not self.replayable:
            self.outputs.clear()
        return base

    @contextlib.contextmanager
    def replaying_before(self, block: str | None):
        """Blocks that run before ``block`` return their recorded outputs (their weights
        are untouched, so the outputs are identical) instead of computing them."""
        if not self.replayable or block not in self.first_call:
            yield
            return
        earlier = self.first_call[:self.first_call.index(block)]
        modules = [self.net.get_submodule(b) for b in earlier]
        for b, mod in zip(earlier, modules, strict=True):
            mod.forward = (lambda *a, _b=b, **k: self.outputs[_b][self.current])
        try:
            yield
        finally:
            for mod in modules:
                del mod.forward

    def loss_with(self, name: str, weight: torch.Tensor, mask: torch.Tensor) -> float:
        """The loss with ``weight`` (the module's parameter) multiplied by ``mask``."""
        original = weight.detach().clone()
        try:
            weight.mul_(mask)
            with self.replaying_before(_block_of(name)):
                return self._forward_loss()
        finally:
            weight.copy_(original)


def measure_sensitivity(net: torch.nn.Module, data, pattern: Hierarchical, sparsity: float,
                        candidates: dict[str, Sequence[Levels]], *,
                        masks: dict[str, torch.Tensor] | None = None,
                        sentences: int = SENSITIVITY_SENTENCES, seed: int = 0,
                        batch_size: int = 64) -> SensitivityTable:
    """Sensitivity of every matrix in ``candidates`` at each of its splits (module
    docstring).

    Args:
        net: a ``transformers`` model whose forward with ``labels`` returns ``.loss`` (mean
            cross-entropy); its pruned weights, if any, are already zero. Left unchanged
            (weights restored, training mode restored).
        data: the tokenised training split (:class:`~fitformer.training.loop.Encoded` or
            :class:`~fitformer.training.translation.EncodedPairs`).
        pattern: the HP pattern.
        sparsity: the requested sparsity (fraction 0-1).
        candidates: module name -> its candidate ``(d1, d2)`` (:func:`split_candidates`).
        masks: module name -> the source's bool mask of the weight's shape (chaining); the
            one-shot masks stay inside it.
        sentences: how many training sentences (the whole split when it has fewer).
        seed: seed of the sentence draw (:func:`sentence_indices`).
        batch_size: sentences per forward pass (length-sorted batches).

    Returns:
        :class:`SensitivityTable`.

    Raises:
        FitformerError: ``sentences`` below 1, or a non-finite loss.
    """
    if sentences < 1:
        raise FitformerError(f"sensitivity needs at least 1 sentence, got {sentences}.")
    was_training = net.training
    net.eval()
    indices = sentence_indices(len(data), sentences, seed)
    blocks = {b for b in map(_block_of, candidates) if b is not None}
    scan = _Scan(net, data, indices, blocks, batch_size)
    scores: dict[str, tuple[SplitScore, ...]] = {}
    try:
        with torch.no_grad():
            base = scan.record()
            for name, levels_list in candidates.items():
                weight = net.get_submodule(name).weight
                previous = masks.get(name) if masks else None
                row = []
                for levels in levels_list:
                    mask = pattern.mask_from_levels(weight, tuple(levels), previous)
                    loss = scan.loss_with(name, weight, mask)
                    if not math.isfinite(loss):
                        raise FitformerError(
                            f"sensitivity of {name} at (d1, d2) = {tuple(levels)}: the loss "
                            f"is {loss}; check the model (fitformer trains in float32).")
                    kept = int(mask.sum())
                    row.append(SplitScore(tuple(levels), pattern.counts(tuple(weight.shape),
                                                                        tuple(levels)),
                                          1.0 - kept / mask.numel(), loss, loss - base))
                scores[name] = tuple(row)
    finally:
        net.train(was_training)
    return SensitivityTable(sparsity, base, len(indices), seed, scores)


def per_layer_splits(net: torch.nn.Module, data, pattern: Hierarchical, sparsity: float,
                     shapes: dict[str, tuple[int, int]], *,
                     masks: dict[str, torch.Tensor] | None = None,
                     source_levels: dict[str, Sequence[float]] | None = None,
                     sentences: int = SENSITIVITY_SENTENCES, seed: int = 0
                     ) -> tuple[dict[str, Levels], SensitivityTable]:
    """Choose each matrix's split by sensitivity.

    Args:
        net, data, pattern, sparsity, masks, sentences, seed: as
            :func:`measure_sensitivity`.
        shapes: module name -> ``(M, N)`` of every prunable matrix.
        source_levels: module name -> the source run's ``(d1, d2)`` (chaining): the
            ceiling of :func:`split_candidates`.

    Returns:
        ``(levels, table)``: module name -> chosen ``(d1, d2)``, and the scan.

    Raises:
        FitformerError: as :func:`split_candidates` and :func:`measure_sensitivity`.
    """
    candidates = {}
    for name, shape in shapes.items():
        ceiling = (source_levels or {}).get(name)
        try:
            candidates[name] = split_candidates(pattern, shape, sparsity, ceiling)
        except FitformerError as exc:
            raise FitformerError(f"{name} {exc}") from None
    table = measure_sensitivity(net, data, pattern, sparsity, candidates, masks=masks,
                                sentences=sentences, seed=seed)
    return table.choose(pattern.split(sparsity)), table


def per_layer_split_text(run_dir) -> str:
    """``d2 0.25 x 8, 0.5 x 28``: how many matrices of a per-layer HP run (its
    ``pruning.json``) took each level-2 density.

    Raises:
        FitformerError: ``pruning.json`` is missing or has no per-layer levels.
    """
    import json
    from pathlib import Path

    path = Path(run_dir) / "pruning.json"
    try:
        layers = json.loads(path.read_text())["layers"]
        d2s = sorted(v["levels"][1] for v in layers.values())
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise FitformerError(f"{path}: no per-layer HP levels ({exc}); is {run_dir} a "
                             "`fitformer prune --pattern hp --hp-split per-layer` run?") from None
    return "d2 " + ", ".join(f"{d2:g} x {d2s.count(d2)}" for d2 in sorted(set(d2s)))
