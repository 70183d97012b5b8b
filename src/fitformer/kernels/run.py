"""Run a pruned model on this machine's CPU with the HP kernel: accuracy, equality with the
masked model, and latency measured side by side with the masked dense model."""

from __future__ import annotations

import copy
import os
import statistics
import time
from pathlib import Path

import torch

from fitformer.errors import FitformerError


def infer(model: torch.nn.Module, input_ids: torch.Tensor, tgt_len: int = 0):
    """One inference, as every latency measurement times it: a forward pass on
    ``input_ids`` (``(batch, seq)`` int64) or, with ``tgt_len`` (encoder-decoders), a greedy
    translation of exactly ``tgt_len`` new tokens (``generate`` with the key/value cache,
    end-of-sentence ignored until then). Call it under ``torch.inference_mode()``."""
    if not tgt_len:
        return model(input_ids=input_ids)
    return model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                          max_new_tokens=tgt_len, min_new_tokens=tgt_len, num_beams=1,
                          do_sample=False)


def median_latency_ms(models: dict[str, torch.nn.Module], input_ids: torch.Tensor,
                      repeats: int = 10, tgt_len: int = 0) -> dict[str, list[float]]:
    """Wall-clock ms of one forward pass of each model on ``input_ids`` (``(batch, seq)``
    int64), ``repeats`` times each after one warm-up, interleaved so that machine noise hits
    all models alike. With ``tgt_len`` (encoder-decoders) one inference is a greedy
    translation of exactly ``tgt_len`` new tokens (``generate`` with the key/value cache,
    end-of-sentence ignored until then). Returns the samples by name (take the median).

    Raises:
        FitformerError: ``repeats < 1``.
    """
    if repeats < 1:
        raise FitformerError(f"--repeats {repeats} must be >= 1.")
    samples: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            infer(m.eval(), input_ids, tgt_len)
        for _ in range(repeats):
            for name, m in models.items():
                t0 = time.perf_counter()
                infer(m, input_ids, tgt_len)
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return samples


def run_pruned(run_dir: str | Path, *, batch_size: int = 1, seq_len: int = 128,
               repeats: int = 10, dev_examples: int | None = None,
               int8: bool = False) -> dict:
    """Load a pruned run, convert its pruned linears to :class:`HPLinear` (or, with
    ``int8``, :class:`fitformer.kernels.int8.HPLinearInt8`), and measure.

    Args:
        run_dir: a run directory made by ``fitformer prune``.
        batch_size, seq_len: the inference timed (random token ids, seed 0).
        repeats: timed runs per model (median reported; one warm-up excluded).
        dev_examples: evaluate on the first ``n`` dev sentences (default: those the run
            was evaluated on, the whole split except for the tiny and quick budgets).
        int8: run the int8 HP kernel; ``recorded_dev_accuracy`` is then the run's fx8
            figure (the recorded precision nearest to int8).

    Returns:
        ``{"run_dir", "pattern", "achieved_sparsity", "backend", "converted_layers", "dev_accuracy",
        "recorded_dev_accuracy", "recorded_precision", "int8_path", "dev_examples",
        "max_abs_logit_diff", "latency_ms":
        {"hp", "masked_dense"}, "speedup_vs_dense", "samples_ms", "batch_size", "seq_len",
        "threads", "load_avg_1min"}``; logits are compared on up to 64 dev sentences.

    Raises:
        FitformerError: not a pruned run, or bad sizes.
    """
    from fitformer.data import load_dataset
    from fitformer.formats.export import load_pruned_run
    from fitformer.kernels.cpu import convert
    from fitformer.models.loading import load_tokenizer, resolve_model
    from fitformer.training.evaluation import evaluate_classifier
    from fitformer.training.loop import Encoded
    from fitformer.training.runs import read_json

    if batch_size < 1 or seq_len < 1:
        raise FitformerError(f"--batch-size {batch_size} and --seq-len {seq_len} must be >= 1.")
    if dev_examples is not None and dev_examples < 1:
        raise FitformerError(f"--dev-examples {dev_examples} must be >= 1.")
    if repeats < 1:
        raise FitformerError(f"--repeats {repeats} must be >= 1.")
    key = read_json(Path(run_dir) / "run.json", "re-create the pruned run") \
        if Path(run_dir, "run.json").is_file() else {}
    if key.get("task") == "translation":
        raise FitformerError(f"--pruned {run_dir} is a translation run; `fitformer run` "
                             "measures classification runs (translation comes with the "
                             "decoder's latency model).")
    masked, masks, pruning = load_pruned_run(run_dir)
    run_dir = Path(run_dir)
    key = key or read_json(run_dir / "run.json", "re-create the pruned run")
    metrics = read_json(run_dir / "metrics.json", "re-create the pruned run")
    if seq_len > masked.config.max_position_embeddings:
        raise FitformerError(f"--seq-len {seq_len} exceeds the model's "
                             f"{masked.config.max_position_embeddings} positions.")
    for name, mask in masks.items():
        w = masked.get_submodule(name).weight
        if bool((w[~mask] != 0).any()):
            raise FitformerError(f"{run_dir}/masks.safetensors does not match the weights "
                                 f"({name} has non-zero weights where its mask prunes); "
                                 "re-create the run with `fitformer prune`.")
    masked.eval()
    hp = copy.deepcopy(masked)
    info = convert(hp, masks, r=int((pruning.get("params") or {}).get("r", 16)),
                   dtype=torch.int8 if int8 else None)

    from fitformer.training.budgets import get_budget

    data = load_dataset(key["dataset"])
    recorded_n = get_budget(key.get("budget", "default")).dev_examples
    dev_split = data.dev.subset(recorded_n if dev_examples is None else dev_examples)
    tok = load_tokenizer(resolve_model(str(run_dir)))
    dev = Encoded(tok, dev_split, int(key.get("max_length", 64)))
    with torch.inference_mode():
        batch = dev.batch(list(range(min(64, len(dev)))))
        batch.pop("labels")
        diff = float((hp(**batch).logits - masked(**batch).logits).abs().max())
    acc = evaluate_classifier(hp, dev).accuracy

    ids = torch.randint(1, masked.config.vocab_size, (batch_size, seq_len),
                        generator=torch.Generator().manual_seed(0))
    samples = median_latency_ms({"hp": hp, "masked_dense": masked}, ids, repeats)
    recorded = "fx8" if int8 else "fp32"
    from fitformer.kernels.int8 import int8_path

    lat = {k: statistics.median(v) for k, v in samples.items()}
    return {"run_dir": str(run_dir), "pattern": pruning.get("pattern"),
            "achieved_sparsity": pruning.get("achieved_sparsity"),
            "backend": info["backend"], "converted_layers": len(info["converted"]),
            "dev_accuracy": acc,
            "recorded_dev_accuracy": metrics["accuracy"]["dev"].get(recorded)
            if dev_examples is None or dev_examples == recorded_n else None,
            "recorded_precision": recorded, "int8_path": int8_path() if int8 else None,
            "dev_examples": len(dev), "max_abs_logit_diff": diff,
            "latency_ms": lat, "speedup_vs_dense": lat["masked_dense"] / lat["hp"],
            "samples_ms": samples, "batch_size": batch_size, "seq_len": seq_len,
            "threads": torch.get_num_threads(), "load_avg_1min": os.getloadavg()[0]}
