"""Prune and fine-tune: one sparsity point (design.md §3, §9).

``prune(...)`` starts from a run directory (by default the cached dense fine-tune, created
when missing), prunes the prunable linear layers to the requested sparsity with the chosen
pattern and pruner while fine-tuning for the budget's steps, squashes the masks, measures
dev and test accuracy at fp32, fx16 and fx8 (for translation: BLEU, greedy, fp32), and
writes a run directory:
``save_pretrained`` files + ``masks.safetensors`` (bool) + ``pruning.json`` +
``metrics.json`` + ``run.json``. Starting from a pruned run of the same pattern chains the
points (masks only shrink). With ``PruneSpec(split_mode="per-layer")`` each HP matrix first
chooses its own level split by a one-shot sensitivity scan
(:mod:`fitformer.sparsity.sensitivity`); ``pruning.json`` records the table.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fitformer.data import load_dataset
from fitformer.data.augment import augment_texts
from fitformer.data.classification import ClassificationDataset, TextSplit
from fitformer.errors import FitformerError
from fitformer.models.layers import linear_layers
from fitformer.models.loading import (
    load_classifier,
    load_tokenizer,
    resolve_model,
)
from fitformer.sparsity.masking import squash_masks
from fitformer.sparsity.patterns import Hierarchical, Pattern, check_not_emptied, make_pattern
from fitformer.sparsity.pruners import PRUNERS, make_pruner
from fitformer.sparsity.sensitivity import SENSITIVITY_SENTENCES, per_layer_splits
from fitformer.training.budgets import get_budget
from fitformer.training.evaluation import accuracy_at_precisions
from fitformer.training.finetune import (
    RunResult,
    check_training_flags,
    encode_splits,
    finetune,
    run_metrics,
    save_run,
)
from fitformer.training.loop import DistillConfig, Encoded, TrainConfig, train_classifier
from fitformer.training.runs import (
    RECIPE_VERSION,
    Uncached,
    find_run,
    load_run_info,
    partial_path,
    read_json,
    start_partial,
    write_json,
)

#: Fine-tuning while pruning: a fine-tuned model needs a smaller step than the dense recipe.
PRUNE_RECIPE = TrainConfig(batch_size=32, learning_rate=5e-5, weight_decay=0.01,
                           warmup_ratio=0.0, max_length=64, seed=0)
#: The same for the from-scratch translation model (trained at 1e-3): batch 128 pairs.
TRANSLATION_PRUNE_RECIPE = TrainConfig(batch_size=128, learning_rate=3e-4, weight_decay=0.01,
                                       warmup_ratio=0.0, max_length=64, seed=0)
#: Fraction of a point's steps during which masks change; the rest recovers accuracy.
PRUNING_WINDOW = 2 / 3
#: How an HP run divides each matrix's density between the levels: one split for every
#: matrix (the default rule or ``level2_density``), or each matrix's own by sensitivity.
SPLIT_MODES = ("global", "per-layer")
#: The per-layer scan in a run's build folder while it trains, so a resumed run keeps the
#: splits its checkpointed masks were made with (and skips the scan).
SCAN_FILE = "sensitivity.json"


@dataclass(frozen=True)
class PruneSpec:
    """What to prune to: pattern, its parameters, sparsity and pruner.

    Attributes:
        split_mode: HP only. ``global``: every matrix takes the split of ``level2_density``
            or the default rule (design.md §3). ``per-layer``: every matrix keeps the
            requested density and takes the ``(d1, d2)`` on the grid whose one-shot masks
            raise the training loss least (:mod:`fitformer.sparsity.sensitivity`).
        sensitivity_sentences: training sentences of the per-layer scan (unused by
            ``global``).
    """

    pattern: str = "hp"
    sparsity: float = 0.8
    block: tuple[int, int] = (16, 16)
    banks: int = 4
    level2_density: float | None = None
    nm_m: int = 4
    pruner: str = "gradual"
    split_mode: str = "global"
    sensitivity_sentences: int = SENSITIVITY_SENTENCES

    @property
    def per_layer(self) -> bool:
        """Whether each matrix chooses its own HP split."""
        return self.split_mode == "per-layer"

    def make_pattern(self) -> Pattern:
        """The pattern, checked against the requested sparsity.

        Raises:
            FitformerError: invalid parameters, a sparsity the pattern cannot reach, or a
                per-layer split with another pattern or with a fixed ``level2_density``.
        """
        pattern = make_pattern(self.pattern, block=self.block, banks=self.banks,
                               level2_density=self.level2_density, nm_m=self.nm_m)
        pattern.plan((64, 64), self.sparsity)  # validates before any data or model is loaded
        if self.split_mode not in SPLIT_MODES:
            raise FitformerError(f"--hp-split {self.split_mode!r}: choose "
                                 f"{' or '.join(SPLIT_MODES)}.")
        if self.per_layer:
            if not isinstance(pattern, Hierarchical):
                raise FitformerError(f"--hp-split per-layer splits HP's two levels; "
                                     f"--pattern {self.pattern} has one. Use --pattern hp.")
            if self.level2_density is not None:
                raise FitformerError("--level2-density fixes one split for every matrix; "
                                     "drop it with --hp-split per-layer.")
            if self.sensitivity_sentences < 1:
                raise FitformerError(f"sensitivity_sentences {self.sensitivity_sentences} "
                                     "must be at least 1 (default 256).")
        return pattern

    def hp_split(self) -> dict | str | None:
        """Requested ``{"d1", "d2"}`` (design.md §3), ``"per_layer"`` when each matrix
        chooses its own (the splits are in ``pruning.json``), ``None`` for other patterns."""
        pat = self.make_pattern()
        if not isinstance(pat, Hierarchical):
            return None
        if self.per_layer:
            return "per_layer"
        d1, d2 = pat.split(self.sparsity)
        return {"d1": d1, "d2": d2}


def _source_state(src: Path) -> tuple[dict, dict | None, dict[str, torch.Tensor] | None]:
    run, _ = load_run_info(src)
    masks_file = src / "masks.safetensors"
    if not masks_file.is_file():
        return run, None, None
    pruning = read_json(src / "pruning.json", "re-create the pruned run")
    try:
        masks = load_file(str(masks_file))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds
        raise FitformerError(f"{masks_file} is corrupt ({exc}); re-create the run.") from None
    return run, pruning, {k: v.to(torch.bool) for k, v in masks.items()}


def _run_name(path: Path) -> str:
    return path.name if path.parent.name == "runs" else str(path)


def dense_root(src: Path) -> Path:
    """The dense run a (chain of) pruned run(s) started from: ``src`` itself when it is not
    pruned, else the run named by each ``run.json``'s ``from`` in turn.

    Raises:
        FitformerError: the chain leads to a run that no longer exists.
    """
    from fitformer.paths import runs_dir

    path = src
    for _ in range(64):
        if not (path / "masks.safetensors").is_file():
            return path
        run, _ = load_run_info(path)
        parent = run.get("from")
        if not parent:
            break
        nxt = Path(parent)
        path = nxt if nxt.is_absolute() else runs_dir() / parent
    raise FitformerError(f"cannot find the dense run that {src} was pruned from (its "
                         "chain of 'from' runs is broken); give --teacher DIR.")


def augmented_train(tokenizer, data: ClassificationDataset, budget, max_length: int,
                    copies: int, seed: int) -> Encoded:
    """The (budget-capped) training split followed by ``copies`` noisy copies of every
    sentence (:func:`fitformer.data.augment.augment_texts`), tokenised; the copies carry
    label ``-100`` (no label: the distillation loss alone trains on them)."""
    split = data.split("train").subset(budget.train_examples)
    extra = augment_texts(split.texts, copies, tokenizer.mask_token or "", seed=seed)
    return Encoded(tokenizer, TextSplit(split.texts + extra,
                                        split.labels + (-100,) * len(extra)), max_length)


def point_steps(budget, n_train: int, batch_size: int, epochs_per_point: float | None) -> int:
    """Optimiser steps of one pruning point: ``epochs_per_point`` epochs of the (capped)
    training split; the smoke budgets scale their fixed step count by it."""
    scale = 1.0 if epochs_per_point is None else epochs_per_point
    if budget.steps_per_point:
        return max(1, math.ceil(budget.steps_per_point * scale))
    return max(1, math.ceil(scale * math.ceil(n_train / batch_size)))


def prune_key(source_run: dict, source_dir: Path, data, spec: PruneSpec, pattern: Pattern,
              budget: str, config: TrainConfig, distill: DistillConfig | None = None,
              teacher_dir: Path | None = None, epochs_per_point: float | None = None
              ) -> dict:
    """The run key of a pruned run (design.md §9). Distillation (mode, temperature, alpha,
    teacher), ``epochs_per_point`` and the per-layer HP split (``hp_split: "per_layer"``
    and the scan's sentence count) enter the key only when used, so runs made without them
    keep their keys."""
    extra = {}
    if spec.per_layer:
        extra["split_scan"] = {"sentences": spec.sensitivity_sentences,
                               "measure": "one-shot loss increase"}
    if distill is not None and distill.enabled:
        extra["distill"] = {**distill.as_key(), "teacher": _run_name(teacher_dir)}
    if epochs_per_point is not None:
        extra["epochs_per_point"] = epochs_per_point
    return {**extra,
        "kind": "prune",
        "recipe_version": RECIPE_VERSION,
        "task": data.task,
        "model": source_run.get("model"),
        "from": _run_name(source_dir),
        "dataset": data.name,
        "data_split": data.data_split,
        "pattern": spec.pattern,
        "pattern_params": pattern.params(),
        "density": 1.0 - spec.sparsity,
        "hp_split": spec.hp_split(),
        "pruner": spec.pruner,
        "budget": budget,
        "max_length": config.max_length,
        "seed": config.seed,
        "recipe": {**config.as_key(), "window": PRUNING_WINDOW,
                   **({"batching": "length-bucketed x50"} if data.task == "translation"
                      else {})},
    }


def prune(model: str = "default", dataset: str = "rotten-tomatoes", *,
          spec: PruneSpec = PruneSpec(), from_dir: str | Path | None = None,
          budget: str = "default", task: str = "classification", seed: int = 0,
          max_length: int = 64, text_column: str = "text", label_column: str = "label",
          force: bool = False, cached_only: bool = False,
          distill: DistillConfig | None = None, teacher_dir: str | Path | None = None,
          epochs_per_point: float | None = None,
          learning_rate: float | None = None) -> RunResult | Uncached:
    """Prune and fine-tune to one sparsity point; write (or reuse) its run directory.

    Args:
        model: base model (``default``, a folder or a hub id); used to create the dense
            fine-tune when ``from_dir`` is not given.
        dataset: ``rotten-tomatoes`` or a local file.
        spec: pattern, sparsity (fraction of pruned weights in each prunable matrix, 0-1),
            block ``(r, c)``, banks ``B``, HP level-2 density, pruner, and the HP split
            mode (``global`` or ``per-layer``: each matrix's ``(d1, d2)`` by sensitivity,
            never above its source levels when chaining).
        from_dir: run directory to start from; default the cached dense fine-tune of the
            same budget (translation: of the default budget), created if missing. A pruned
            run of the same pattern chains the points.
        budget: ``tiny``, ``quick`` or ``default``: data caps and steps per point.
        seed: data order and dropout.
        cached_only: return the cached run, or :class:`~fitformer.training.runs.Uncached`
            (falsy: the run's key and the steps its checkpoint holds) instead of training.
        distill: knowledge distillation from the dense teacher
            (:class:`~fitformer.training.loop.DistillConfig`; classification only).
        teacher_dir: the teacher run; default the dense run the chain started from.
        epochs_per_point: epochs of the training split per point (default 1; the smoke
            budgets scale their step count); the pruning window is the first
            :data:`PRUNING_WINDOW` of them, the rest is recovery with fixed masks.
        learning_rate: peak AdamW learning rate (default :data:`PRUNE_RECIPE`'s 5e-5, or
            the translation recipe's); part of the run key through the recipe.

    Returns:
        :class:`~fitformer.training.finetune.RunResult` (:class:`~fitformer.training.runs.
        Uncached` only with ``cached_only`` when the run is not cached).

    Raises:
        FitformerError: bad pattern parameters, a source pruned with another pattern or at
            a higher sparsity, a source whose per-layer levels a global split would grow,
            missing inputs.
    """
    if task not in ("classification", "translation"):
        raise FitformerError(f"unknown task {task!r}; choose classification or translation.")
    translation = task == "translation"
    if translation and dataset == "rotten-tomatoes":
        dataset = "tatoeba-en-fr"
    b = get_budget(budget)
    check_training_flags(seed=seed, max_length=max_length, learning_rate=learning_rate)
    if translation:
        from fitformer.models.seq2seq import Seq2SeqShape

        positions = Seq2SeqShape().max_positions
        if max_length > positions:
            raise FitformerError(f"--max-length {max_length} exceeds the translation model's "
                                 f"{positions} positions.")
    pattern = spec.make_pattern()
    if spec.pruner not in PRUNERS:
        raise FitformerError(f"unknown pruner {spec.pruner!r}; choose from {', '.join(PRUNERS)}.")
    if translation and distill is not None and distill.enabled:
        raise FitformerError("--distill is for classification; translation pruning "
                             "trains on the references (use --distill none).")
    data = load_dataset(dataset, task=task, text_column=text_column, label_column=label_column)
    assert translation or isinstance(data, ClassificationDataset)
    if from_dir is None:
        if translation and not cached_only:
            from fitformer.training.loop import _console

            _console().print("no --from: pruning starts from the dense translation model of the "
                             "default budget (trained first if missing: about an hour on 2 "
                             "cores); give --from DIR to start from another run.",
                             highlight=False)
        # Each budget has its own dense reference (design.md §9): a tiny or quick prune
        # starts from the tiny or quick dense run. Translation starts from the full model.
        src = finetune(model, dataset, task=task, budget="default" if translation else budget,
                       seed=seed,
                       max_length=max_length, text_column=text_column,
                       label_column=label_column).path
    else:
        src = Path(from_dir).expanduser()
        if not src.exists():
            raise FitformerError(f"--from {src} does not exist; give a run directory.")
        if not src.is_dir():
            raise FitformerError(f"--from {src} is a file; give a run directory "
                                 "(made by fitformer finetune or prune).")
        if model != "default":
            raise FitformerError("--model and --from both given: the run in --from decides "
                                 "the model; drop --model.")
    source_run, source_pruning, source_masks = _source_state(src)
    if source_run.get("dataset") != data.name or source_run.get("data_split") != data.data_split:
        raise FitformerError(
            f"--from {src} was trained on {source_run.get('dataset')!r}, not {data.name!r} "
            "(or with another split); prune a model fine-tuned on the same data.")
    if source_pruning is not None:
        same = (source_pruning["pattern"] == spec.pattern
                and source_pruning["params"] == pattern.params())
        if not same:
            raise FitformerError(
                f"--from {src} was pruned with {source_pruning['pattern']} "
                f"{source_pruning['params']}; chain only the same pattern and parameters "
                f"({spec.pattern} {pattern.params()}), or start from the dense run."
            )
        if source_pruning["requested_sparsity"] > spec.sparsity + 1e-9:
            raise FitformerError(
                f"--from {src} is already pruned to {source_pruning['requested_sparsity']}; "
                f"masks only shrink, so request a sparsity >= that."
            )
    if source_run.get("task", "classification") != task:
        raise FitformerError(f"--from {src} is a {source_run.get('task')} run; give --task "
                             f"{source_run.get('task')} or a {task} run.")
    recipe = TRANSLATION_PRUNE_RECIPE if translation else PRUNE_RECIPE
    n_train = len(data.train) if b.train_examples is None else min(b.train_examples,
                                                                    len(data.train))
    if epochs_per_point is not None and not (math.isfinite(epochs_per_point)
                                             and epochs_per_point > 0):
        raise FitformerError(f"--epochs-per-point {epochs_per_point} must be > 0 (e.g. 2).")
    augment = distill.augment if distill is not None and distill.enabled else 0
    steps = point_steps(b, n_train * (1 + augment), recipe.batch_size, epochs_per_point)
    config = replace(recipe, seed=seed, max_length=max_length, max_steps=steps,
                     learning_rate=recipe.learning_rate if learning_rate is None
                     else learning_rate)
    distill = distill if distill is not None and distill.enabled else None
    teacher = None
    if distill is not None:    # classification only: refused for translation above
        teacher = Path(teacher_dir).expanduser() if teacher_dir else dense_root(src)
        if not teacher.is_dir():
            raise FitformerError(f"--teacher {teacher} is not a run directory.")
    key = prune_key(source_run, src, data, spec, pattern, budget, config, distill, teacher,
                    epochs_per_point)
    cached = find_run(key)
    if cached is not None and not force:
        run, metrics = load_run_info(cached)
        return RunResult(cached, run, metrics, cached=True)
    if cached_only:
        return Uncached(key)

    started = time.perf_counter()
    torch.manual_seed(seed)
    if translation:
        from fitformer.models.seq2seq import load_translation_model

        net, tokenizer = load_translation_model(str(src))
    else:
        ref = resolve_model(str(src))
        tokenizer = load_tokenizer(ref)
        net = load_classifier(ref)
    if translation:
        from fitformer.training.translation import EncodedPairs, capped_splits

        pair_splits = capped_splits(data, b)
        train = EncodedPairs(tokenizer, pair_splits[0], max_length)
    else:
        train, dev, test = encode_splits(tokenizer, data, b, max_length)
    fit = train if not augment else augmented_train(tokenizer, data, b, max_length, augment,
                                                    seed)
    layers = [i for i in linear_layers(net) if i.prunable]
    initial_levels = None
    if source_pruning is not None:
        initial_levels = {n: tuple(v["levels"]) for n, v in source_pruning["layers"].items()}
    resumed = None
    if spec.per_layer and not force:
        build = partial_path(key)
        if (build / "checkpoint.pt").is_file() and (build / SCAN_FILE).is_file():
            resumed = read_json(build / SCAN_FILE, "delete it to scan again")
    final_levels, scan = _final_levels(net, train, layers, pattern, spec, seed, source_masks,
                                       initial_levels, resumed)
    pruner = make_pruner(spec.pruner, pattern, final_levels, initial_masks=source_masks,
                         initial_levels=initial_levels, window=PRUNING_WINDOW)
    teacher_net = None
    if teacher is not None:
        teacher_net = load_classifier(resolve_model(str(teacher)))
    partial = start_partial(key, force)
    if scan is not None:
        write_json(partial / SCAN_FILE, scan)
    label = f"{spec.pattern} {spec.sparsity:g} ({spec.pruner}, {budget}" + \
        (f", distill {distill.mode}" if distill else "") + \
        (f", {augment} augmented copies per sentence)" if augment else ")")
    trained = train_classifier(net, fit, config, hooks=[pruner],
                               checkpoint=partial / "checkpoint.pt", description=label,
                               teacher=teacher_net, distill=distill)
    masks = squash_masks(net)
    (partial / SCAN_FILE).unlink(missing_ok=True)  # recorded in pruning.json
    pruning = _pruning_report(net, layers, masks, pattern, spec, final_levels)
    if scan is not None:
        pruning["sensitivity"] = scan
    window = pruner.window_steps
    pruning["schedule"] = {
        "steps": steps, "epochs_per_point": epochs_per_point or 1.0,
        "pruning_steps": window, "recovery_steps": steps - window,
        "window_fraction": PRUNING_WINDOW, "learning_rate": config.learning_rate,
        "distill": key.get("distill"), "train_sentences": len(fit),
        "augmented_sentences": len(fit) - len(train),
    }
    sparsity = {"overall": pruning["achieved_sparsity"],
                "per_layer": {n: v["achieved_sparsity"] for n, v in pruning["layers"].items()}}
    if translation:
        from fitformer.training.translation import translation_metrics

        # Greedy decoding for a profile point (beam search is for the final report).
        metrics = translation_metrics(net, tokenizer, pair_splits, trained, started, b,
                                      seed=seed, sparsity=sparsity, hp_split=spec.hp_split(),
                                      beam=False, **{"from": key["from"]})
    else:
        table = accuracy_at_precisions(net, {"dev": dev, "test": test}, train)
        metrics = run_metrics(data.task, table, trained, started, (train, dev, test), b,
                              sparsity=sparsity, hp_split=spec.hp_split(), seed=seed,
                              **{"from": key["from"]})
    reason = (metrics.get("collapsed") or {}).get("fp32")
    if reason:
        from fitformer.training.loop import _console

        src_sparsity = source_pruning["requested_sparsity"] if source_pruning else 0.0
        _console().print(
            f"warning: {label} collapsed to the majority class ({reason}); select never "
            f"chooses it. Likely cause: the jump from sparsity {src_sparsity:g} to "
            f"{spec.sparsity:g} in {steps} steps ({pruner.window_steps} pruning). With "
            "`fitformer prune`, try --distill logits, a larger --epochs-per-point, or chain "
            "through lower sparsities (--from a less sparse run); with `select` or "
            "`profile`, a larger --budget (the smoke budgets train a few steps).",
            highlight=False)
    save_file({k: v.contiguous() for k, v in masks.items()}, str(partial / "masks.safetensors"))
    path = save_run(partial, key, net, tokenizer, metrics, {"pruning.json": pruning})
    return RunResult(path, key, metrics, cached=False)


def _final_levels(net, train, layers, pattern: Pattern, spec: PruneSpec, seed: int,
                  source_masks: dict[str, torch.Tensor] | None,
                  source_levels: dict[str, tuple[float, ...]] | None,
                  resumed: dict | None = None
                  ) -> tuple[dict[str, tuple[float, ...]], dict | None]:
    """Every prunable layer's final level densities, and the sensitivity table (as in
    ``pruning.json``) when the split is per layer; ``resumed``, the table of an interrupted
    build of the same run, gives the splits without a new scan.

    Raises:
        FitformerError: a layer the plan would empty, or (chaining) a layer whose level
            densities would grow above the source's: masks only shrink.
    """
    scan = None
    if spec.per_layer and resumed is not None:
        scan = resumed
        levels = {i.name: (scan["layers"][i.name]["chosen"]["d1"],
                           scan["layers"][i.name]["chosen"]["d2"]) for i in layers}
    elif spec.per_layer:
        from fitformer.training.loop import _console

        assert isinstance(pattern, Hierarchical)
        _console().print(f"per-layer HP split: one-shot loss of {len(layers)} matrices at "
                         f"each split of density {1 - spec.sparsity:.3g}, on "
                         f"{min(spec.sensitivity_sentences, len(train))} training sentences",
                         highlight=False)
        started = time.perf_counter()
        levels, table = per_layer_splits(net, train, pattern, spec.sparsity,
                                         {i.name: i.shape for i in layers},
                                         masks=source_masks, source_levels=source_levels,
                                         sentences=spec.sensitivity_sentences, seed=seed)
        scan = {**table.to_json(levels), "wall_time_s": time.perf_counter() - started}
    else:
        levels = {i.name: pattern.plan(i.shape, spec.sparsity) for i in layers}
    for i in layers:
        check_not_emptied(pattern, i.name, i.shape, levels[i.name], spec.sparsity)
        src = (source_levels or {}).get(i.name)
        if src is not None and any(f > s + 1e-9 for f, s in zip(levels[i.name], src,
                                                                 strict=True)):
            raise FitformerError(
                f"{i.name}: the source run's levels {tuple(src)} are below "
                f"{tuple(levels[i.name])} in some level, and masks only shrink; chain "
                "with --hp-split per-layer (it keeps each layer within its source levels) "
                "or start from the dense run.")
    return levels, scan


def _pruning_report(net, layers, masks, pattern: Pattern, spec: PruneSpec,
                    final_levels) -> dict:
    per_layer = {}
    kept = total = 0
    for info in layers:
        mask = masks[info.name]
        plan = pattern.describe(net.get_submodule(info.name).weight, mask,
                                final_levels[info.name])
        entry = {"shape": list(info.shape), "role": info.role, "layer": info.layer,
                 "levels": list(plan.levels), **plan.counts,
                 "achieved_sparsity": plan.achieved_sparsity}
        if isinstance(pattern, Hierarchical):
            # On the real matrix (a trailing partial block row holds fewer real rows).
            entry["d1"] = min(1.0, plan.counts["K1"] * pattern.r / info.out_features)
            entry["d2"] = plan.counts["k"] / pattern.bank_width
        per_layer[info.name] = entry
        kept += int(mask.sum())
        total += mask.numel()
    return {
        "pattern": spec.pattern,
        "params": pattern.params(),
        "pruner": spec.pruner,
        "requested_sparsity": spec.sparsity,
        "achieved_sparsity": 1.0 - kept / total,
        "hp_split": spec.hp_split(),
        "layers": per_layer,
    }
