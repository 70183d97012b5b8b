"""The real PyTorch model that the measuring back-ends time (the host CPU, a CUDA GPU with
``--measure``): a pruned run or HP container as it was trained, or the model pruned one
shot to the workload's pattern and sparsity, or the dense model."""

from __future__ import annotations

from pathlib import Path

from fitformer.hardware.workload import Workload


def masked_model(wl: Workload, model: str, pruned: str | None):
    """``(net, masks)``: the model ``wl`` describes, in fp32 on the CPU, with its pruned
    weights zero, and its masks (``{module name: bool tensor (out_features,
    in_features)}``), or ``None`` for a dense model.

    Args:
        wl: the workload (its pattern, sparsity, block, banks and HP split are used when no
            ``pruned`` is given). model: ``default``, a folder or a hub id (a classifier),
            or a dense translation run (an encoder-decoder). pruned: a pruned run directory
            or an HP container file (classifiers), or a pruned translation run.

    The one-shot masks (:func:`fitformer.hardware.frontends.one_shot_masks`, magnitude, no
    fine-tuning) have the same kept counts as the trained point of the same pattern and
    sparsity, so the same latency on kernels that exploit the structure.

    Raises:
        FitformerError: from the loaders (missing run, bad container, unknown model).
    """
    import torch

    if wl.dims.is_seq2seq:
        return _translation_model(wl, model, pruned)
    from fitformer.models.loading import load_classifier, quiet_transformers, resolve_model

    if pruned is not None and Path(pruned).is_file():
        from fitformer.formats.container import read_container
        from fitformer.formats.export import rebuild_model
        from fitformer.hardware.frontends import container_masks

        net = rebuild_model(read_container(Path(pruned)))
        masks = container_masks(Path(pruned))[0]
    elif pruned is not None:
        from fitformer.formats.export import load_pruned_run

        net, masks, _ = load_pruned_run(pruned)
    else:
        with quiet_transformers():
            net = load_classifier(resolve_model(model))
        if wl.pattern == "dense" or wl.sparsity <= 0.0:
            return net, None
        masks = _one_shot(net, wl, model)
    return net, {k: torch.as_tensor(v) for k, v in masks.items()}


def _one_shot(net, wl: Workload, model: str) -> dict:
    """One-shot masks of ``wl``'s pattern and sparsity on ``model``'s weights, applied to
    ``net`` (its pruned weights set to zero)."""
    import torch

    from fitformer.hardware.frontends import one_shot_masks

    masks = {k: torch.as_tensor(v) for k, v in one_shot_masks(
        model, wl.pattern, wl.sparsity, block=wl.block, banks=wl.banks,
        level2_density=(wl.hp_split or {}).get("d2")).items()}
    with torch.no_grad():
        for name, m in masks.items():
            net.get_submodule(name).weight.mul_(m)
    return masks


def _translation_model(wl: Workload, model: str, pruned: str | None):
    """:func:`masked_model` for an encoder-decoder: a pruned translation run, or the dense
    run ``model`` pruned one shot to ``wl``'s pattern and sparsity."""
    import torch

    from fitformer.models.seq2seq import load_translation_model

    if pruned is not None:
        from safetensors.torch import load_file

        from fitformer.formats.export import check_pruned_dir

        run = check_pruned_dir(pruned)
        net, _ = load_translation_model(str(run))
        return net, {k: v.to(torch.bool)
                     for k, v in load_file(str(run / "masks.safetensors")).items()}
    net, _ = load_translation_model(model)
    if wl.pattern == "dense" or wl.sparsity <= 0.0:
        return net, None
    return net, _one_shot(net, wl, model)
