"""Front-ends: build the :class:`~fitformer.hardware.workload.Workload` IR (design.md §6).

* :func:`workload_from_config` / :func:`dense_workload`: an HF config or bare dimensions,
  unpruned (e.g. a published accelerator's model);
* :func:`workload_from_run`: a pruned run directory or an HP container (``--pruned``),
  measured on its masks (:func:`read_masks`, the one mask loader of the hardware side);
* :func:`workload_from_masks`: masks by module name plus a config;
* :func:`workload_from_pattern`: ``--sparsity S --pattern P``. HP, ``cbb`` and ``dense``
  profiles follow from the pattern's counts alone; the other patterns' structure depends on
  the weights, so their masks are computed one-shot (magnitude, no fine-tuning) on the
  model's real pretrained weights (:func:`one_shot_masks`).

Non-divisible shapes: columns are padded with zeros to a whole stripe, as in
:mod:`fitformer.sparsity.patterns`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fitformer.errors import FitformerError
from fitformer.hardware.workload import (
    MatrixWork,
    ModelDims,
    Workload,
    _dense_work,
    _finish,
    _mark_balanced,
    balanced_work,
    check_block_banks,
    dims_from_config,
    structure_from_counts,
    work_from_mask,
)


def workload_from_config(config, block: tuple[int, int] = (16, 16),
                         banks: int = 4) -> Workload:
    """The unpruned workload of a transformers config object (BERT-style encoder or
    BART-family encoder-decoder).

    Raises:
        FitformerError: as :func:`~fitformer.hardware.workload.dims_from_config`.
    """
    return dense_workload(dims_from_config(config), block, banks)


def dense_workload(dims: ModelDims, block: tuple[int, int] = (16, 16),
                   banks: int = 4) -> Workload:
    """The unpruned workload of a model known only by its dimensions (no weights needed),
    e.g. a published accelerator's model."""
    check_block_banks(block, banks)
    matrices = [_dense_work(dims, role, layer, *block, banks, stack)
                for role, layer, stack in dims.prunable_slots() + dims.head_slots()]
    return _finish(dims, matrices, block, banks, "dense", 0.0, None,
                   f"dense {dims.layers}x{dims.hidden} (dimensions only)",
                   {"dims": dims.__dict__, "block": block, "banks": banks, "dense": True})


def load_dims(model: str = "default") -> tuple[ModelDims, object]:
    """Dimensions of ``model`` (``default``, a folder or a hub id) and its resolved ref.

    Raises:
        FitformerError: the model cannot be resolved or is not a BERT-style encoder.
    """
    from transformers import AutoConfig

    from fitformer.models.loading import resolve_model

    ref = resolve_model(model)
    try:
        config = AutoConfig.from_pretrained(ref.load_from)
    except (OSError, ValueError) as exc:
        raise FitformerError(f"cannot read the config of model {model!r} ({exc}).") from None
    return dims_from_config(config), ref


def workload_from_pattern(model: str = "default", *, pattern: str = "hp",
                          sparsity: float = 0.0, block: tuple[int, int] = (16, 16),
                          banks: int = 4, level2_density: float | None = None,
                          nm_m: int = 4) -> Workload:
    """The workload of ``model`` pruned to ``sparsity`` with ``pattern`` (module docstring).

    Args:
        model: ``default``, a ``save_pretrained`` folder or a hub id.
        pattern: ``hp``, ``cbb``, ``unstructured``, ``block``, ``bank``, ``nm`` or ``dense``
            (``sparsity`` 0 with any pattern is the dense model).
        sparsity: requested sparsity of the six prunable roles, in [0, 1).
        block, banks, level2_density, nm_m: pattern parameters (design.md §3).

    Raises:
        FitformerError: bad pattern parameters, a sparsity out of range, or a layer the
            pattern would empty.
    """
    from fitformer.sparsity.patterns import check_not_emptied, make_pattern

    check_block_banks(block, banks)
    if not 0.0 <= sparsity < 1.0:
        raise FitformerError(f"--sparsity {sparsity} must be in [0, 1).")
    dims, ref = load_dims(model)
    r, c = block
    if sparsity == 0.0:
        pattern = "dense"
    pat = None if pattern == "dense" else make_pattern(
        pattern, block=block, banks=banks, level2_density=level2_density, nm_m=nm_m)
    hp_split = None
    if pattern == "hp":
        d1, d2 = pat.split(sparsity)
        hp_split = {"d1": d1, "d2": d2}
    key = {"model": ref.key(), "pattern": pattern, "sparsity": sparsity, "block": block,
           "banks": banks, "params": pat.params() if pat else {}, "dims": dims.__dict__}
    matrices: list[MatrixWork] = []
    if structure_from_counts(pattern):
        for role, layer, stack in dims.prunable_slots():
            shape = dims.shape(role)
            if pat is None:
                matrices.append(_dense_work(dims, role, layer, r, c, banks, stack))
                continue
            levels = pat.plan(shape, sparsity)
            check_not_emptied(pat, f"{role} of {stack} layer {layer}", shape, levels,
                              sparsity)
            counts = pat.counts(shape, levels)
            k = counts.get("k", c // banks)
            matrices.append(balanced_work(role, layer, shape, r, c, banks, counts["K1"], k,
                                          stack))
        source = f"{pattern} at sparsity {sparsity} (counts)"
    else:
        for role, layer, stack, mask, _ in _one_shot_masks(ref, dims, pat, sparsity):
            matrices.append(work_from_mask(role, layer, mask, c, banks, stack, r))
        source = f"{pattern} at sparsity {sparsity} (one-shot masks of {ref.id})"
    for role, layer, stack in dims.head_slots():
        matrices.append(_dense_work(dims, role, layer, r, c, banks, stack))
    return _finish(dims, matrices, block, banks, pattern, sparsity, hp_split, source, key)


def _one_shot_masks(ref, dims: ModelDims, pat, sparsity: float):
    """Masks of the pattern on the model's real pretrained weights (one shot, magnitude)."""
    import torch
    from safetensors import safe_open

    from fitformer.models.layers import layer_index, role_of, stack_of
    from fitformer.sparsity.patterns import check_not_emptied

    if ref.path is None:
        raise FitformerError(f"--pattern {pat.name} needs the weights of {ref.id} (its "
                             "structure depends on them); give a local folder or a run.")
    out = []
    with safe_open(str(ref.path / "model.safetensors"), "pt") as f:
        for key in f.keys():
            if not key.endswith(".weight"):
                continue
            name = key[: -len(".weight")]
            role, layer, stack = role_of(name), layer_index(name), stack_of(name)
            if role not in ("q", "k", "v", "attn_out", "ffn_in", "ffn_out"):
                continue
            w = f.get_tensor(key).float()
            levels = pat.plan(tuple(w.shape), sparsity)
            check_not_emptied(pat, name, tuple(w.shape), levels, sparsity)
            with torch.no_grad():
                mask = pat.mask_from_levels(w, levels)
            out.append((role, layer, stack, mask.numpy(), name))
    slots = dims.prunable_slots()
    if sorted(o[:3] for o in out) != sorted(slots):
        raise FitformerError(f"{ref.path}: found {len(out)} prunable matrices, expected "
                             f"{len(slots)}; is it a BERT-style encoder or a BART-family "
                             "encoder-decoder?")
    out.sort(key=lambda t: slots.index(t[:3]))
    return out


def one_shot_masks(model: str, pattern: str, sparsity: float, *,
                   block: tuple[int, int] = (16, 16), banks: int = 4,
                   level2_density: float | None = None, nm_m: int = 4) -> dict[str, np.ndarray]:
    """Masks (bool, by module name) of ``pattern`` at ``sparsity`` on the real pretrained
    weights of ``model`` (one shot, magnitude, no fine-tuning): the structure a simulator
    runs for ``--sparsity``.

    Raises:
        FitformerError: as :func:`workload_from_pattern`.
    """
    from fitformer.sparsity.patterns import make_pattern

    check_block_banks(block, banks)
    if not 0.0 < sparsity < 1.0:
        raise FitformerError(f"--sparsity {sparsity} must be in (0, 1) to build masks.")
    dims, ref = load_dims(model)
    pat = make_pattern(pattern, block=block, banks=banks, level2_density=level2_density,
                       nm_m=nm_m)
    from transformers import AutoConfig

    # Name masks like the classifier's modules (`fitformer model show`, pruned runs): a
    # base checkpoint's "encoder.layer.0..." is "bert.encoder.layer.0..." there.
    config = AutoConfig.from_pretrained(ref.load_from)
    prefix = "" if getattr(config, "is_encoder_decoder", False) else config.model_type + "."
    return {(name if name.startswith(prefix) else prefix + name): mask
            for *_, mask, name in _one_shot_masks(ref, dims, pat, sparsity)}


def read_masks(path: str | Path) -> tuple[dict[str, np.ndarray], dict, object]:
    """``(masks by module name (bool (M, N)), pruning parameters, transformers config)`` of
    a pruned run directory or an HP container file: the one mask loader of the hardware
    side (estimate, simulate, select).

    Raises:
        FitformerError: not a pruned run or container, or unreadable/corrupt files.
    """
    path = Path(path)
    return container_masks(path) if path.is_file() else run_masks(path)


def run_masks(run_dir: str | Path) -> tuple[dict[str, np.ndarray], dict, object]:
    """``(masks by module name, pruning.json, transformers config)`` of a pruned run.

    Raises:
        FitformerError: not a pruned run, or unreadable files.
    """
    from safetensors.numpy import load_file
    from transformers import AutoConfig

    from fitformer.formats.export import check_pruned_dir
    from fitformer.training.runs import read_json

    run_dir = check_pruned_dir(run_dir)
    pruning = read_json(run_dir / "pruning.json", "re-create the pruned run")
    try:
        config = AutoConfig.from_pretrained(str(run_dir))
        masks = load_file(str(run_dir / "masks.safetensors"))
    except Exception as exc:  # noqa: BLE001 - transformers/safetensors raise several kinds
        raise FitformerError(f"{run_dir}: cannot read config.json or masks.safetensors "
                             f"({exc}); re-create the run with `fitformer prune`.") from None
    return {k: v.astype(bool) for k, v in masks.items()}, pruning, config


def container_masks(path: str | Path) -> tuple[dict[str, np.ndarray], dict, object]:
    """``(masks, pruning-like parameters, config)`` of an HP container file.

    Raises:
        FitformerError: an unreadable or corrupt container.
    """
    from transformers import AutoConfig

    from fitformer.formats.container import read_container

    cont = read_container(Path(path))
    masks = {name: cont.weight(name)[1] for name in cont.layer_names()}
    first = next(iter(cont.header["layers"].values()), {})
    cfg = dict(cont.header["config"])
    try:
        config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    except Exception as exc:  # noqa: BLE001
        raise FitformerError(f"{path}: the container's model config cannot be built ({exc}).") \
            from None
    params = {"pattern": "hp", "params": {"r": first.get("r", 16), "c": first.get("c", 16),
                                          "B": first.get("B", 4)}}
    return masks, params, config


def workload_from_masks(masks: dict[str, np.ndarray], config, *, pattern: str,
                        block: tuple[int, int] = (16, 16), banks: int = 4,
                        sparsity: float = 0.0, hp_split: dict | None = None,
                        source: str = "masks") -> Workload:
    """The workload measured on masks (bool ``(M, N)`` by module name); layers without a
    mask are dense.

    Raises:
        FitformerError: a mask that is not a linear layer of a BERT-style encoder, or whose
            shape disagrees with the config.
    """
    from fitformer.models.layers import layer_index, role_of, stack_of

    check_block_banks(block, banks)
    if not masks:
        raise FitformerError(f"{source}: the masks file holds no masks; re-create the run "
                             "with `fitformer prune`.")
    dims = dims_from_config(config)
    slots = dims.prunable_slots() + dims.head_slots()
    matrices = []
    for name, mask in masks.items():
        role, layer, stack = role_of(name), layer_index(name), stack_of(name)
        if dims.is_seq2seq and role == "classifier":
            role = "lm_head"
        if (role, layer, stack) not in slots:
            raise FitformerError(f"{source}: mask {name} is not a linear layer of a "
                                 "BERT-style encoder or a BART-family encoder-decoder.")
        if tuple(mask.shape) != dims.shape(role):
            raise FitformerError(f"{source}: mask {name} has shape {tuple(mask.shape)}, the "
                                 f"config says {dims.shape(role)}.")
        matrices.append(work_from_mask(role, layer, mask.astype(bool), block[1], banks,
                                       stack, block[0]))
    have = {(m.role, m.layer, m.stack) for m in matrices}
    for role, layer, stack in slots:
        if (role, layer, stack) not in have:
            matrices.append(_dense_work(dims, role, layer, *block, banks, stack))
    matrices = _mark_balanced(matrices, block, banks)
    matrices.sort(key=lambda m: slots.index((m.role, m.layer, m.stack)))
    mask_digest = hashlib.sha256()
    for name in sorted(masks):
        mask_digest.update(name.encode())
        mask_digest.update(np.packbits(masks[name].astype(bool)).tobytes())
    return _finish(dims, matrices, block, banks, pattern, sparsity, hp_split, source,
                   {"masks": mask_digest.hexdigest(), "dims": dims.__dict__,
                    "block": block, "banks": banks})


def _params_of(pruning: dict) -> tuple[tuple[int, int], int]:
    params = pruning.get("params", {})
    return (int(params.get("r", 16)), int(params.get("c", 16))), int(params.get("B", 4))


def run_workload_and_masks(run_dir: str | Path) -> tuple[Workload, dict[str, np.ndarray]]:
    """``(workload, masks)`` of a pruned run or HP container, its masks read once
    (:func:`workload_from_run` plus the masks a simulator runs).

    Raises:
        FitformerError: as :func:`workload_from_run`.
    """
    path = Path(run_dir)
    masks, pruning, config = read_masks(path)
    block, banks = _params_of(pruning)
    wl = workload_from_masks(masks, config, pattern=pruning.get("pattern", "unstructured"),
                             block=block, banks=banks,
                             sparsity=float(pruning.get("requested_sparsity", 0.0)),
                             hp_split=pruning.get("hp_split"), source=str(path))
    return wl, masks


def workload_from_run(run_dir: str | Path) -> Workload:
    """The workload of a pruned run (``--pruned DIR``) or an HP container file, measured on
    its masks. The accelerator's ``r x c`` and ``B`` are the run's pattern parameters
    (defaults 16x16 and 4 for patterns without them).

    Raises:
        FitformerError: not a pruned run or container, corrupt masks, or masks that do not
            match the model's config.
    """
    return run_workload_and_masks(run_dir)[0]
