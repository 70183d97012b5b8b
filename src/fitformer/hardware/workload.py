"""The workload the accelerator runs: model dimensions and, per weight matrix, the work its
sparsity structure gives the sparse linear unit (design.md §6).

A weight ``W`` of shape ``(M, N)`` is processed stripe by stripe (``c`` columns). Inside a
stripe, a PE walks the stripe's row segments; its ``B`` multipliers read one weight each
from their own bank (``c / B`` columns) per cycle, so a row segment takes as many cycles as
its fullest bank holds kept weights (shorter banks are padded with explicit zeros, as the
CSB baseline format does) and an empty row segment is skipped. The **stripe profile** is
therefore, for every stripe ``s``::

    stripe_cycles[s] = sum over rows i of max over banks b of nnz(W[i, stripe s, bank b])

For HP every kept row segment holds exactly ``k`` weights in every bank and every stripe
keeps ``K1`` blocks of ``r`` rows, so ``stripe_cycles[s] = K1 * r * k`` for every stripe:
balanced across PEs and banks. For column-balanced block pruning ``k = c / B``; for a
dense matrix ``K1 = M / r`` as well. For any other mask the profile is measured on the mask.

This module is the **IR** between the model side and the hardware back-ends: model
dimensions (:class:`ModelDims`) and per-matrix work (:class:`MatrixWork`) in a
:class:`Workload`. The front-ends that build it from an HF config, a pruned run, an HP
container or pattern counts live in :mod:`fitformer.hardware.frontends`.

Non-divisible shapes: columns are padded with zeros to a whole stripe, as in
:mod:`fitformer.sparsity.patterns`; the counts-only profile treats a trailing partial block
as full (an upper bound; masks give the exact value).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import numpy as np

from fitformer.errors import FitformerError
from fitformer.sparsity.patterns import pattern_class

LINEAR_ROLES = ("q", "k", "v", "attn_out", "ffn_in", "ffn_out", "pooler", "classifier",
                "lm_head")
HEAD_ROLES = ("pooler", "classifier", "lm_head")


def structure_from_counts(pattern: str) -> bool:
    """Whether the workload of ``pattern`` follows from its counts alone: ``dense``, or a
    pattern the registry declares stripe-balanced
    (:attr:`fitformer.sparsity.patterns.Pattern.stripe_balanced`: every stripe keeps
    ``K1`` blocks, every bank of a kept row segment ``k`` weights). Any other pattern's
    stripe profile depends on the weights and is measured on masks.

    Raises:
        FitformerError: an unknown pattern (the message lists the registered ones).
    """
    if pattern == "dense":
        return True
    return pattern_class(pattern).stripe_balanced


@dataclass(frozen=True)
class ModelDims:
    """Dimensions of a Transformer (from its ``config.json``): a BERT-style encoder
    classifier, or an encoder-decoder (``decoder_layers > 0``, translation).

    Attributes:
        layers: encoder layers ``L``.
        hidden: hidden size ``H`` (``d_model``).
        heads: attention heads; ``head_dim = hidden / heads``.
        intermediate: FFN size ``I``.
        vocab: vocabulary size (embedding rows; an encoder-decoder's ``lm_head`` rows).
        num_labels: classifier outputs.
        max_positions: longest sequence the position embeddings cover, if known.
        decoder_layers: decoder layers (0: encoder-only). Decoder layers have the
            encoder's width, heads and FFN size.
        final_norm: each stack ends with a layer norm (pre-norm models, e.g. mBART).
    """

    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int
    num_labels: int = 2
    max_positions: int | None = None
    decoder_layers: int = 0
    final_norm: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def is_seq2seq(self) -> bool:
        """An encoder-decoder (translation): the inference is the encoder over the source
        then ``tgt_len`` autoregressive decoder steps."""
        return self.decoder_layers > 0

    def check_seq_len(self, seq_len: int, tgt_len: int = 0) -> None:
        """Raises FitformerError when ``seq_len`` (or ``tgt_len``) exceeds the position
        embeddings, or when an encoder-decoder gets no ``tgt_len``."""
        for flag, n in (("--seq-len" if not self.is_seq2seq else "--src-len", seq_len),
                        ("--tgt-len", tgt_len)):
            if self.max_positions and n > self.max_positions:
                raise FitformerError(f"{flag} {n} exceeds the model's {self.max_positions} "
                                     f"positions; give at most {self.max_positions}.")
        if self.is_seq2seq and tgt_len < 1:
            raise FitformerError(f"--tgt-len {tgt_len} must be >= 1: an encoder-decoder needs "
                                 "the number of target tokens decoded per sentence.")

    def shape(self, role: str) -> tuple[int, int]:
        """``(M, N)`` of the weight with this role."""
        H, Im = self.hidden, self.intermediate
        return {"q": (H, H), "k": (H, H), "v": (H, H), "attn_out": (H, H),
                "ffn_in": (Im, H), "ffn_out": (H, Im), "pooler": (H, H),
                "classifier": (self.num_labels, H), "lm_head": (self.vocab, H)}[role]

    def prunable_slots(self) -> list[tuple[str, int, str]]:
        """``(role, layer, stack)`` of every prunable matrix, in execution order: per
        encoder layer q, k, v, attn_out, ffn_in, ffn_out; per decoder layer the
        self-attention's four (stack ``decoder``), the cross-attention's four (``cross``),
        then ffn_in, ffn_out."""
        att = ("q", "k", "v", "attn_out")
        out = [(role, layer, "encoder") for layer in range(self.layers)
               for role in (*att, "ffn_in", "ffn_out")]
        for layer in range(self.decoder_layers):
            out += [(role, layer, "decoder") for role in att]
            out += [(role, layer, "cross") for role in att]
            out += [(role, layer, "decoder") for role in ("ffn_in", "ffn_out")]
        return out

    def head_slots(self) -> list[tuple[str, None, str]]:
        """The unpruned output matrices: pooler and classifier, or ``lm_head``."""
        if self.is_seq2seq:
            return [("lm_head", None, "decoder")]
        return [("pooler", None, "encoder"), ("classifier", None, "encoder")]


def dims_from_config(config) -> ModelDims:
    """:class:`ModelDims` from a transformers config object: a BERT-style encoder
    (``hidden_size``, ``num_hidden_layers``, ...) or a BART-family encoder-decoder
    (``d_model``, ``encoder_layers``, ``decoder_layers``, ...).

    Raises:
        FitformerError: missing fields, decoder layers shaped unlike the encoder's, or a
            hidden size that is not a multiple of the head count.
    """
    if getattr(config, "is_encoder_decoder", False):
        try:
            dims = ModelDims(int(config.encoder_layers), int(config.d_model),
                             int(config.encoder_attention_heads), int(config.encoder_ffn_dim),
                             int(config.vocab_size), num_labels=int(config.vocab_size),
                             max_positions=getattr(config, "max_position_embeddings", None),
                             decoder_layers=int(config.decoder_layers),
                             final_norm=config.model_type in ("mbart",)
                             or bool(getattr(config, "normalize_before", False)))
        except AttributeError as exc:
            raise FitformerError(f"the model config lacks {exc.name!r}: the accelerator "
                                 "model covers BART-family encoder-decoders (d_model, "
                                 "encoder_layers, decoder_layers, ...).") from None
        if (int(config.decoder_attention_heads) != dims.heads
                or int(config.decoder_ffn_dim) != dims.intermediate):
            raise FitformerError("the accelerator model needs decoder layers with the "
                                 "encoder's heads and FFN size (shared units).")
    else:
        try:
            dims = ModelDims(int(config.num_hidden_layers), int(config.hidden_size),
                             int(config.num_attention_heads), int(config.intermediate_size),
                             int(config.vocab_size),
                             int(getattr(config, "num_labels", 2) or 2),
                             getattr(config, "max_position_embeddings", None))
        except AttributeError as exc:
            raise FitformerError(f"the model config lacks {exc.name!r}: the accelerator "
                                 "model covers BERT-style encoders (hidden_size, "
                                 "num_hidden_layers, num_attention_heads, intermediate_size)"
                                 " and BART-family encoder-decoders.") from None
    if dims.hidden % dims.heads:
        raise FitformerError(f"hidden size {dims.hidden} is not a multiple of the "
                             f"{dims.heads} attention heads.")
    return dims


@dataclass(frozen=True)
class MatrixWork:
    """The work of one weight matrix on the sparse linear unit.

    Attributes:
        role: ``q``, ``k``, ``v``, ``attn_out``, ``ffn_in``, ``ffn_out``, ``pooler``,
            ``classifier`` or ``lm_head``.
        layer: layer index within its stack, or ``None`` (pooler, classifier, lm_head).
        shape: ``(M, N)``.
        stripe_cycles: int64 array ``(S,)``, ``S = ceil(N / c)``: cycles one PE spends on
            each stripe per token pass (see the module docstring).
        row_segments: int64 array ``(S,)``: non-empty row segments per stripe.
        nnz: kept weights.
        balanced: every row segment holds the same count in every bank and every stripe the
            same number of row segments (HP, cbb, dense): no headers per row segment, only
            block-row indices.
        k_per_bank: for balanced matrices, the kept weights per bank (``c / B`` = no
            in-bank offsets); ``None`` otherwise.
        kept_blocks: for balanced matrices, ``K1`` per stripe; ``None`` otherwise.
        stack: ``encoder``, ``decoder`` or ``cross`` (the decoder's cross-attention;
            :func:`fitformer.models.layers.stack_of`).
        block_cycles: int64 ``(ceil(M / r), S)``: per block (block row, stripe) the cycles
            of its row segments (sum over its rows of the fullest bank), measured on a mask;
            ``None`` for counts-only workloads (then spread evenly over the block rows).
            The row-tiled shared array (:mod:`fitformer.hardware.shared_array`) needs it.
    """

    role: str
    layer: int | None
    shape: tuple[int, int]
    stripe_cycles: np.ndarray
    row_segments: np.ndarray
    nnz: int
    balanced: bool = False
    k_per_bank: int | None = None
    kept_blocks: int | None = None
    stack: str = "encoder"
    block_cycles: np.ndarray | None = None

    @property
    def stripes(self) -> int:
        return int(self.stripe_cycles.shape[0])

    @property
    def density(self) -> float:
        return self.nnz / (self.shape[0] * self.shape[1])


@dataclass(frozen=True)
class Workload:
    """A model's dimensions plus the work of each of its weight matrices.

    Attributes:
        dims: :class:`ModelDims`.
        matrices: every linear layer (six per encoder layer, pooler, classifier).
        block: ``(r, c)`` of the accelerator's stripes; ``banks``: ``B``.
        pattern: the sparsity pattern (``dense`` when unpruned).
        hp_split: ``{"d1", "d2"}`` requested (HP only), ``"per_layer"`` (a run whose
            split was chosen per matrix, design.md §9; each matrix's counts hold it), or
            ``None``.
        source: what the structure came from (run directory, or pattern + sparsity).
        digest: a digest of everything the estimate depends on (cache key).
    """

    dims: ModelDims
    matrices: tuple[MatrixWork, ...]
    block: tuple[int, int]
    banks: int
    pattern: str
    sparsity: float
    hp_split: dict | str | None
    source: str
    digest: str = field(default="")

    def by_role(self, *roles: str) -> list[MatrixWork]:
        return [m for m in self.matrices if m.role in roles]

    def matrix(self, role: str, layer: int | None, stack: str = "encoder") -> MatrixWork:
        """The matrix of ``(role, layer, stack)``. Raises KeyError when absent."""
        for m in self.matrices:
            if m.role == role and m.layer == layer and m.stack == stack:
                return m
        raise KeyError((role, layer, stack))

    @property
    def overall_sparsity(self) -> float:
        """Sparsity over the prunable matrices (q, k, v, attn_out, ffn_in, ffn_out)."""
        pr = [m for m in self.matrices if m.role not in HEAD_ROLES]
        return 1.0 - sum(m.nnz for m in pr) / sum(m.shape[0] * m.shape[1] for m in pr)


def stripe_profile(mask: np.ndarray, c: int, banks: int) -> tuple[np.ndarray, np.ndarray]:
    """Cycles and non-empty row segments per stripe of a mask (module docstring).

    Args:
        mask: bool ``(M, N)``.
        c: stripe width; ``banks``: ``B``, dividing ``c``.

    Returns:
        ``(stripe_cycles, row_segments)``, int64 arrays of shape ``(ceil(N / c),)``.
    """
    M, N = mask.shape
    S = math.ceil(N / c)
    padded = np.zeros((M, S * c), dtype=bool)
    padded[:, :N] = mask
    per_bank = padded.reshape(M, S, banks, c // banks).sum(axis=3, dtype=np.int64)
    longest = per_bank.max(axis=2)                                    # (M, S)
    return longest.sum(axis=0), (longest > 0).sum(axis=0).astype(np.int64)


def block_profile(mask: np.ndarray, r: int, c: int, banks: int) -> np.ndarray:
    """Cycles per block of a mask: int64 ``(ceil(M / r), ceil(N / c))``, the sum over the
    block's rows of the fullest bank's kept count (the module docstring's stripe profile,
    split by block row). Trailing partial blocks are padded with zeros."""
    M, N = mask.shape
    S, R = math.ceil(N / c), math.ceil(M / r)
    padded = np.zeros((R * r, S * c), dtype=bool)
    padded[:M, :N] = mask
    longest = padded.reshape(R * r, S, banks, c // banks).sum(axis=3, dtype=np.int64).max(2)
    return longest.reshape(R, r, S).sum(axis=1)


def work_from_mask(role: str, layer: int | None, mask: np.ndarray, c: int,
                   banks: int, stack: str = "encoder", r: int = 16) -> MatrixWork:
    """:class:`MatrixWork` measured on a mask (bool ``(M, N)``)."""
    cycles, segments = stripe_profile(mask, c, banks)
    return MatrixWork(role, layer, tuple(mask.shape), cycles, segments, int(mask.sum()),
                      stack=stack, block_cycles=block_profile(mask, r, c, banks))


def balanced_work(role: str, layer: int | None, shape: tuple[int, int], r: int, c: int,
                  banks: int, K1: int, k: int, stack: str = "encoder") -> MatrixWork:
    """:class:`MatrixWork` of a balanced matrix from its counts: every stripe keeps ``K1``
    blocks of ``r`` rows, every kept row segment ``k`` weights per bank."""
    M, N = shape
    S = math.ceil(N / c)
    rows = min(K1 * r, M)
    return MatrixWork(role, layer, shape, np.full(S, rows * k, dtype=np.int64),
                      np.full(S, rows if k else 0, dtype=np.int64),
                      nnz=min(rows * k * banks * S, M * N) if k else 0, balanced=True,
                      k_per_bank=k, kept_blocks=K1, stack=stack)


def _dense_work(dims: ModelDims, role: str, layer: int | None, r: int, c: int,
                banks: int, stack: str = "encoder") -> MatrixWork:
    M, _ = dims.shape(role)
    return balanced_work(role, layer, dims.shape(role), r, c, banks, math.ceil(M / r),
                         c // banks, stack)


def check_block_banks(block: tuple[int, int], banks: int) -> None:
    """Refuse a block ``(r, c)`` or ``banks`` B the hardware model cannot take: each
    positive, B dividing the block width c (design.md §3: banks split a block row segment).

    Raises:
        FitformerError: naming ``--banks`` and ``--block``.
    """
    r, c = block
    if r < 1 or c < 1 or banks < 1 or c % banks:
        raise FitformerError(f"--banks {banks} must divide the block width c = {c} "
                             "(e.g. --block 16x16 --banks 4).")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finish(dims, matrices, block, banks, pattern, sparsity, hp_split, source, digest_obj):
    if isinstance(hp_split, dict):       # "per_layer": the per-layer counts say it all
        hp_split = {k: round(float(v), 6) for k, v in hp_split.items()}
    return Workload(dims, tuple(matrices), tuple(block), banks, pattern, sparsity, hp_split,
                    source, _digest(digest_obj))


def _mark_balanced(matrices: list[MatrixWork], block: tuple[int, int],
                   banks: int) -> list[MatrixWork]:
    """Mark mask-measured matrices whose profile is balanced (every stripe the same cycles
    and row segments, every row segment the same count per bank) so that they are stored
    like HP (block-row indices, no row-segment headers)."""
    r, c = block
    out = []
    for m in matrices:
        if m.balanced or m.nnz == 0:
            out.append(m)
            continue
        segs, cyc = m.row_segments, m.stripe_cycles
        uniform = (segs == segs[0]).all() and (cyc == cyc[0]).all() and segs[0] > 0
        k = int(cyc[0] // segs[0]) if uniform else 0
        if uniform and k * segs[0] == cyc[0] and k * banks * segs.sum() == m.nnz \
                and segs[0] % r == 0:
            out.append(MatrixWork(m.role, m.layer, m.shape, cyc, segs, m.nnz, True, k,
                                  int(segs[0] // r), m.stack, m.block_cycles))
        else:
            out.append(m)
    return out
