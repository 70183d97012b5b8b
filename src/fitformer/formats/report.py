"""Format-size reports: one matrix from a shape and a pattern, or every layer of a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fitformer.formats.formats import FORMATS
from fitformer.formats.table import format_sizes


def formats_for_shape(shape: tuple[int, int], pattern: str, sparsity: float, *,
                      value_bits: int = 16, block=(16, 16), banks: int = 4,
                      level2_density: float | None = None, nm_m: int = 4,
                      aligned: bool = False, seed: int = 0) -> list[dict]:
    """Sizes of an ``(M, N)`` matrix of N(0, 1) weights (seeded) masked by ``pattern`` at
    ``sparsity`` (sizes depend on the mask only).

    Returns:
        One row per format (:func:`~fitformer.formats.table.format_sizes`);
        ``ratio_to_bound`` is ``None`` when the bound is 0 bits (an all-zero mask, sparsity
        1.0).

    Raises:
        FitformerError: more than 2**26 elements, bad pattern parameters, or a plan that
            prunes the whole matrix while the request keeps weights.
    """
    from fitformer.errors import FitformerError
    from fitformer.sparsity.patterns import check_not_emptied, make_pattern

    if shape[0] * shape[1] > 1 << 26:
        raise FitformerError(f"--shape {shape[0]}x{shape[1]} has more than 2**26 elements; "
                             "this command sizes one layer of a real model.")
    pat = make_pattern(pattern, block=block, banks=banks, level2_density=level2_density,
                       nm_m=nm_m)
    levels = pat.plan(shape, sparsity)
    check_not_emptied(pat, "--shape", shape, levels, sparsity)
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    mask = pat.mask_from_levels(w, levels)
    return format_sizes(w.numpy(), mask.numpy(), value_bits=value_bits, pattern=pattern,
                        counts=pat.counts(shape, levels), block=block, banks=banks,
                        nm_m=nm_m, aligned=aligned)


def formats_for_run(run_dir: str | Path, *, value_bits: int = 16,
                    aligned: bool = False) -> dict:
    """Sizes of every pruned layer of a run and the model total.

    Returns:
        ``{"layers": {name: [rows]}, "total": [rows summed, ratio to the summed bound],
        "total_bound_bits"}``; a ratio is ``None`` where the bound is 0 bits (every layer
        pruned to nothing).

    Raises:
        FitformerError: not a pruned run.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from fitformer.errors import FitformerError
    from fitformer.formats.export import check_pruned_dir
    from fitformer.training.runs import read_json

    run_dir = check_pruned_dir(run_dir)
    pruning = read_json(run_dir / "pruning.json", "re-create the pruned run")
    try:
        masks = load_file(str(run_dir / "masks.safetensors"))
    except Exception as exc:  # noqa: BLE001
        raise FitformerError(f"{run_dir}/masks.safetensors is corrupt ({exc}); re-create the "
                             "run.") from None
    params = pruning["params"]
    block = (params.get("r", 16), params.get("c", 16))
    banks = params.get("B", 4)
    layers = {}
    try:
        handle = safe_open(str(run_dir / "model.safetensors"), "pt")
    except Exception as exc:  # noqa: BLE001
        raise FitformerError(f"{run_dir}/model.safetensors is corrupt ({exc}); re-create the "
                             "run.") from None
    with handle as f:
        keys = set(f.keys())
        for name, mask in masks.items():
            key = f"{name}.weight" if f"{name}.weight" in keys else None
            if key is None:
                raise FitformerError(f"{run_dir}/model.safetensors has no {name}.weight.")
            w = f.get_tensor(key).float().numpy()
            info = pruning["layers"][name]
            counts = {k: info[k] for k in ("K1", "k", "kept", "blocks", "n") if k in info}
            layers[name] = format_sizes(w, mask.numpy().astype(bool), value_bits=value_bits,
                                        pattern=pruning["pattern"], counts=counts,
                                        block=block, banks=banks,
                                        nm_m=params.get("m", 4), aligned=aligned)
    bound = sum(rows[0]["bound_bits"] for rows in layers.values())
    total = []
    for i, name in enumerate(FORMATS):
        s = {k: int(np.sum([rows[i][k] for rows in layers.values()]))
             for k in ("total_bits", "value_bits", "index_bits", "pointer_bits")}
        # An all-zero model (sparsity 1.0) has a bound of 0 bits: the ratio is undefined.
        total.append({"format": name, **s,
                      "ratio_to_bound": s["total_bits"] / bound if bound > 0 else None,
                      "MB": s["total_bits"] / 8e6})
    return {"run": str(run_dir), "pattern": pruning["pattern"], "value_bits": value_bits,
            "layers": layers, "total": total, "total_bound_bits": bound}
