"""Training and evaluation of the translation model (issue 9): a dense run from scratch on
Tatoeba English->French, BLEU and chrF by sacrebleu.

Scores (Papineni et al. 2002 BLEU; Popovic 2015 chrF) are sacrebleu's corpus scores with
its default 13a tokenisation on detokenised text, on the whole split and on the pairs whose
English source has at most 10 words. Decoding: greedy (``num_beams=1``) for profiles and
dev, beam search (4 beams) for the final test figure.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from fitformer.data.translation import PairSplit
from fitformer.errors import FitformerError
from fitformer.training.loop import TrainConfig

SHORT_WORDS = 10
BUCKET_BATCHES = 50
BEAMS_FINAL = 4

# The from-scratch recipe: AdamW 1e-3, 5 % warm-up then linear decay, batch 128 pairs.
TRANSLATION_RECIPE = TrainConfig(epochs=2.0, batch_size=128, learning_rate=1e-3,
                                 weight_decay=0.01, warmup_ratio=0.05, max_length=64)
# Epochs of the dense run per budget (the tiny / quick splits are small).
TRANSLATION_EPOCHS = {"tiny": 4.0, "quick": 5.0, "default": 2.0}


class EncodedPairs:
    """A tokenised split of sentence pairs; ``batch`` pads and masks labels with -100."""

    def __init__(self, tokenizer, split: PairSplit, max_length: int):
        self.tokenizer = tokenizer
        self.split = split
        self.sources = tokenizer(list(split.sources), truncation=True,
                                 max_length=max_length)["input_ids"]
        self.targets = tokenizer(list(split.targets), truncation=True,
                                 max_length=max_length)["input_ids"]

    def __len__(self) -> int:
        return len(self.sources)

    def epoch_order(self, seed: int, epoch: int, batch_size: int) -> list[int]:
        """Length-bucketed order of one epoch: shuffle, sort each chunk of
        :data:`BUCKET_BATCHES` batches by length, cut into batches, shuffle the batches (the
        partial batch, if any, goes last so that every step's slice is one batch). Padding
        drops several-fold against random batches; the order is reproducible per epoch."""
        import random

        g = random.Random(seed * 1_000_003 + epoch)
        idx = list(range(len(self)))
        g.shuffle(idx)
        chunk = batch_size * BUCKET_BATCHES
        batches = []
        for i in range(0, len(idx), chunk):
            part = sorted(idx[i:i + chunk],
                          key=lambda j: (len(self.sources[j]), len(self.targets[j])))
            batches += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
        full = [b for b in batches if len(b) == batch_size]
        g.shuffle(full)
        return [j for b in full + [b for b in batches if len(b) < batch_size] for j in b]

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        src = [self.sources[i] for i in indices]
        tgt = [self.targets[i] for i in indices]
        S, L = max(map(len, src)), max(map(len, tgt))
        ids = torch.full((len(src), S), pad, dtype=torch.long)
        mask = torch.zeros((len(src), S), dtype=torch.long)
        labels = torch.full((len(tgt), L), -100, dtype=torch.long)
        for r, (s, t) in enumerate(zip(src, tgt, strict=True)):
            ids[r, :len(s)] = torch.tensor(s)
            mask[r, :len(s)] = 1
            labels[r, :len(t)] = torch.tensor(t)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass(frozen=True)
class TranslationScores:
    """Corpus BLEU and chrF (0-100) on ``n`` pairs, and on the ``n_short`` pairs whose
    source has at most 10 words."""

    bleu: float
    chrf: float
    bleu_short: float
    chrf_short: float
    n: int
    n_short: int
    num_beams: int
    sentences_per_s: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@torch.no_grad()
def translate(model, tokenizer, sources: Sequence[str], *, num_beams: int = 1,
              batch_size: int = 64, max_new_tokens: int = 64) -> list[str]:
    """Detokenised translations of ``sources`` (greedy, or beam search with ``num_beams``).

    Raises:
        FitformerError: ``num_beams`` or ``batch_size`` below 1.
    """
    if num_beams < 1 or batch_size < 1:
        raise FitformerError(f"--beams {num_beams} and batch size {batch_size} must be >= 1.")
    model.eval()
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[str] = [""] * len(sources)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        enc = tokenizer([sources[i] for i in idx], return_tensors="pt", padding=True,
                        truncation=True, max_length=model.config.max_position_embeddings)
        enc.pop("token_type_ids", None)
        gen = model.generate(**enc, num_beams=num_beams, do_sample=False,
                             max_new_tokens=max_new_tokens, early_stopping=num_beams > 1)
        for i, text in zip(idx, tokenizer.batch_decode(gen, skip_special_tokens=True),
                           strict=True):
            out[i] = text
    return out


def score(hypotheses: Sequence[str], split: PairSplit, num_beams: int = 1,
          seconds: float = 0.0) -> TranslationScores:
    """sacrebleu corpus BLEU and chrF of ``hypotheses`` against ``split.targets``, on all
    pairs and on those whose source has at most :data:`SHORT_WORDS` words."""
    import sacrebleu

    refs = list(split.targets)
    short = [i for i, s in enumerate(split.sources) if len(s.split()) <= SHORT_WORDS]

    def pair(idx):
        h = [hypotheses[i] for i in idx]
        r = [refs[i] for i in idx]
        if not idx:
            return float("nan"), float("nan")
        return (sacrebleu.corpus_bleu(h, [r]).score, sacrebleu.corpus_chrf(h, [r]).score)

    bleu, chrf = pair(list(range(len(refs))))
    bleu_s, chrf_s = pair(short)
    return TranslationScores(bleu, chrf, bleu_s, chrf_s, len(refs), len(short), num_beams,
                             len(refs) / seconds if seconds else 0.0)


def evaluate_translation(model, tokenizer, split: PairSplit, *, num_beams: int = 1,
                         batch_size: int = 64) -> TranslationScores:
    """Translate ``split.sources`` and score against its targets."""
    start = time.perf_counter()
    hyps = translate(model, tokenizer, list(split.sources), num_beams=num_beams,
                     batch_size=batch_size)
    return score(hyps, split, num_beams, time.perf_counter() - start)


def translation_recipe(budget: str, *, seed: int, max_length: int, epochs: float | None,
                       learning_rate: float | None) -> TrainConfig:
    return replace(TRANSLATION_RECIPE, seed=seed, max_length=max_length,
                   epochs=TRANSLATION_EPOCHS[budget] if epochs is None else epochs,
                   learning_rate=TRANSLATION_RECIPE.learning_rate if learning_rate is None
                   else learning_rate)


def _cap(split: PairSplit, n: int | None) -> PairSplit:
    if n is None or n >= len(split):
        return split
    return PairSplit(split.sources[:n], split.targets[:n], split.attribution[:n])


def capped_splits(data, budget) -> tuple[PairSplit, PairSplit, PairSplit]:
    """``(train, dev, test)`` of a translation dataset, capped by the budget."""
    return tuple(_cap(getattr(data, s), getattr(budget, f"{s}_examples"))
                 for s in ("train", "dev", "test"))


def fixed_point_bleu(net, tokenizer, train_s: PairSplit, dev_s: PairSplit, test_s: PairSplit,
                     precisions: Sequence[str] = ("fx16", "fx8")) -> dict:
    """Greedy BLEU of dev and test in each fixed-point precision (design.md §4: per-tensor
    ``ap_fixed``, activations calibrated on the first 256 training pairs; softmax and layer
    norm in fp32). Returns ``{"dev": {precision: bleu}, "test": {...}}``."""
    from fitformer.models.fixed_point import calibrate, fixed_point
    from fitformer.training.evaluation import CALIBRATION_SENTENCES

    cal_data = EncodedPairs(tokenizer, _cap(train_s, CALIBRATION_SENTENCES), 64)
    idx = list(range(len(cal_data)))
    cal = calibrate(net, [cal_data.batch(idx[i:i + 64]) for i in range(0, len(idx), 64)])
    out: dict[str, dict] = {"dev": {}, "test": {}}
    for p in precisions:
        with fixed_point(net, p, cal):
            out["dev"][p] = evaluate_translation(net, tokenizer, dev_s).bleu
            out["test"][p] = evaluate_translation(net, tokenizer, test_s).bleu
    return out


def complete_fixed_point(path, metrics: dict, data, budget) -> dict:
    """Fill fx16 / fx8 BLEU missing from a cached translation run (evaluation only; written
    back to ``metrics.json``)."""
    from fitformer.models.seq2seq import load_translation_model
    from fitformer.training.runs import write_json

    if all(metrics["bleu"][s].get(p) is not None for s in ("dev", "test")
           for p in ("fx16", "fx8")):
        return metrics
    net, tokenizer = load_translation_model(str(path))
    fixed = fixed_point_bleu(net, tokenizer, *capped_splits(data, budget))
    for s in ("dev", "test"):
        metrics["bleu"][s].update(fixed[s])
    write_json(path / "metrics.json", metrics)
    return metrics


def translation_metrics(net, tokenizer, splits: tuple[PairSplit, PairSplit, PairSplit],
                        trained, started: float, budget, *, seed: int, sparsity: dict,
                        hp_split: dict | None, beam: bool, **extra) -> dict:
    """The ``metrics.json`` of a translation run: BLEU under ``"bleu"`` (dev and test,
    greedy; design.md §9), 4-beam test BLEU under ``"bleu_beam"`` when ``beam``, chrF and
    the short-sentence scores under ``"scores"``; fx16 / fx8 BLEU (greedy) in the FPGA's
    fixed point (design.md §4), calibrated on 256 training pairs."""
    train_s, dev_s, test_s = splits
    dev = evaluate_translation(net, tokenizer, dev_s)
    test = evaluate_translation(net, tokenizer, test_s)
    scores = {"dev_greedy": dev.as_dict(), "test_greedy": test.as_dict()}
    fixed = fixed_point_bleu(net, tokenizer, train_s, dev_s, test_s)
    bleu_beam = None
    if beam:
        tb = evaluate_translation(net, tokenizer, test_s, num_beams=BEAMS_FINAL)
        scores[f"test_beam{BEAMS_FINAL}"] = tb.as_dict()
        bleu_beam = {"test": {"fp32": tb.bleu}}
    window = max(1, len(trained.losses) // 10)
    return {
        "schema_version": 1, "task": "translation",
        "bleu": {"dev": {"fp32": dev.bleu, **fixed["dev"]},
                 "test": {"fp32": test.bleu, **fixed["test"]}},
        "bleu_beam": bleu_beam, "scores": scores,
        "loss": {"train_first": sum(trained.losses[:window]) / window,
                 "train_last": sum(trained.losses[-window:]) / window},
        "sparsity": sparsity, "hp_split": hp_split,
        "examples_per_s": trained.train_examples_per_s,
        "wall_time_s": time.perf_counter() - started, "train_time_s": trained.wall_time_s,
        "steps": trained.steps, "resumed_from_step": trained.resumed_from_step,
        "split_sizes": {"train": len(train_s), "dev": len(dev_s), "test": len(test_s)},
        "budget": budget.name, "smoke": budget.smoke, "seed": seed,
        "parameters": sum(p.numel() for p in net.parameters()), **extra,
    }


def finetune_translation(dataset: str = "tatoeba-en-fr", *, budget: str = "default",
                         seed: int = 0, max_length: int = 64, epochs: float | None = None,
                         learning_rate: float | None = None, force: bool = False,
                         shape=None, cached_only: bool = False):
    """Train the encoder-decoder Transformer from scratch on ``dataset`` (dense) and write
    (or reuse) its run directory; ``metrics.json`` holds BLEU under ``"bleu"`` (design.md
    §9): dev and test, greedy; test with 4-beam search under ``"bleu_beam"``; chrF and the
    short-sentence scores under ``"scores"``.

    Args:
        dataset: ``tatoeba-en-fr``. budget: ``tiny``, ``quick`` or ``default`` (caps the
            splits; epochs per :data:`TRANSLATION_EPOCHS`). seed, max_length, epochs,
            learning_rate: the recipe (:data:`TRANSLATION_RECIPE`). force: retrain.
        shape: :class:`fitformer.models.seq2seq.Seq2SeqShape` (default 3+3 x 256).
        cached_only: return :class:`~fitformer.training.runs.Uncached` instead of
            training when the run is not cached.

    Returns:
        :class:`fitformer.training.finetune.RunResult` (:class:`~fitformer.training.runs.
        Uncached`: not cached and ``cached_only``).

    Raises:
        FitformerError: a classification dataset, bad flags or budget.
    """
    from fitformer.data import load_dataset
    from fitformer.models.seq2seq import Seq2SeqShape, new_translation_model, train_tokenizer
    from fitformer.training.budgets import get_budget
    from fitformer.training.finetune import RunResult, check_training_flags, save_run
    from fitformer.training.loop import train_classifier
    from fitformer.training.runs import (
        RECIPE_VERSION,
        Uncached,
        find_run,
        load_run_info,
        start_partial,
    )

    shape = shape or Seq2SeqShape()
    b = get_budget(budget)
    check_training_flags(seed=seed, max_length=max_length, epochs=epochs,
                         learning_rate=learning_rate)
    if max_length > shape.max_positions:
        raise FitformerError(f"--max-length {max_length} exceeds the model's "
                             f"{shape.max_positions} positions.")
    data = load_dataset(dataset, task="translation")
    config = translation_recipe(budget, seed=seed, max_length=max_length, epochs=epochs,
                                learning_rate=learning_rate)
    key = {"kind": "finetune", "recipe_version": RECIPE_VERSION, "task": "translation",
           "model": {"id": "transformer-from-scratch",
                     "architecture": "MBartForConditionalGeneration (pre-norm)",
                     "shape": shape.as_key(), "tokenizer": "bpe on the train split"},
           "dataset": data.name, "data_split": data.data_split, "pattern": "dense",
           "pattern_params": {}, "density": 1.0, "hp_split": None, "pruner": None,
           "budget": budget, "max_length": max_length, "seed": seed,
           "recipe": {**config.as_key(), "batching": f"length-bucketed x{BUCKET_BATCHES}"}}
    cached = find_run(key)
    if cached is not None and not force:
        run, metrics = load_run_info(cached)
        metrics = complete_fixed_point(cached, metrics, data, b)
        return RunResult(cached, run, metrics, cached=True)
    if cached_only:
        return Uncached(key)

    started = time.perf_counter()
    train_s, dev_s, test_s = capped_splits(data, b)
    partial = start_partial(key, force)
    if (partial / "tokenizer.json").is_file():       # resuming: the tokenizer of the start
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(partial))
    else:
        tokenizer = train_tokenizer(list(train_s.sources) + list(train_s.targets),
                                    shape.vocab_size)
        tokenizer.save_pretrained(str(partial))
    net = new_translation_model(tokenizer, shape, seed)
    train = EncodedPairs(tokenizer, train_s, max_length)
    trained = train_classifier(net, train, config, checkpoint=partial / "checkpoint.pt",
                               description=f"translation from scratch ({budget})")
    metrics = translation_metrics(net, tokenizer, (train_s, dev_s, test_s), trained, started,
                                  b, seed=seed, sparsity={"overall": 0.0, "per_layer": {}},
                                  hp_split=None, beam=True)
    path = save_run(partial, key, net, tokenizer, metrics)
    return RunResult(path, key, metrics, cached=False)
