"""Export a pruned run to an HP container and rebuild a model from one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fitformer.errors import FitformerError
from fitformer.formats.container import (
    TOKENIZER_FILES,
    Container,
    write_container,
)
from fitformer.models.fixed_point import int_bits, quantize_fixed, width_of
from fitformer.sparsity.patterns import Hierarchical


def load_pruned_run(run_dir: str | Path):
    """``(model, masks, pruning)`` of a pruned run directory: the classifier as saved (its
    pruned weights are zero), its bool masks by module name, and ``pruning.json``.

    Raises:
        FitformerError: not a pruned run, corrupt masks, or masks that do not fit the model.
    """
    from safetensors.torch import load_file

    from fitformer.models.loading import load_classifier, quiet_transformers, resolve_model
    from fitformer.training.runs import read_json

    run_dir = check_pruned_dir(run_dir)
    pruning = read_json(run_dir / "pruning.json", "re-create the pruned run")
    with quiet_transformers():
        net = load_classifier(resolve_model(str(run_dir)))
    try:
        masks = {k: v.to(torch.bool)
                 for k, v in load_file(str(run_dir / "masks.safetensors")).items()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds
        raise FitformerError(f"{run_dir}/masks.safetensors is corrupt ({exc}); re-create the "
                             "run with `fitformer prune`.") from None
    modules = dict(net.named_modules())
    for name, mask in masks.items():
        w = modules[name].weight if name in modules else None
        if w is None or tuple(w.shape) != tuple(mask.shape):
            raise FitformerError(f"{run_dir}/masks.safetensors: mask {name} does not match the "
                                 "model; re-create the run.")
    return net, masks, pruning


def _load_run(run_dir: Path):
    net, masks, pruning = load_pruned_run(run_dir)
    if pruning.get("pattern") != Hierarchical.name:
        raise FitformerError(f"{run_dir} was pruned with {pruning.get('pattern')!r}; the HP "
                             "container stores HP-pruned runs (`fitformer prune --pattern hp`).")
    return net, masks, pruning


def check_pruned_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path if it is an existing pruned run directory.

    Raises:
        FitformerError: it does not exist, is a file, or has no masks.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FitformerError(f"--pruned {run_dir} does not exist; check the path.")
    if not run_dir.is_dir():
        raise FitformerError(f"--pruned {run_dir} is a file; give a run directory.")
    if not (run_dir / "masks.safetensors").is_file():
        raise FitformerError(f"{run_dir} has no masks.safetensors: it is not a pruned run "
                             "(create one with `fitformer prune`).")
    return run_dir


def export_run(run_dir: str | Path, out: str | Path, precision: str = "fp32") -> dict:
    """Write the HP container of a pruned run.

    Args:
        run_dir: a run directory made by ``fitformer prune --pattern hp``.
        out: the container file to write.
        precision: value dtype: ``fp32``, ``fx16`` or ``fx8``.

    Returns:
        The header, plus ``file_bytes``.

    Raises:
        FitformerError: not a pruned HP run, unknown precision.
    """
    if precision not in ("fp32", "fx16", "fx8"):
        raise FitformerError(f"--precision {precision!r}: choose fp32, fx16 or fx8.")
    run_dir = Path(run_dir)
    net, masks, pruning = _load_run(run_dir)
    params = pruning["params"]
    state = net.state_dict()
    layers = {n: (state[f"{n}.weight"], m) for n, m in masks.items()}
    others = {k: v for k, v in state.items() if k[: -len(".weight")] not in masks
              or not k.endswith(".weight")}
    files = {f: (run_dir / f).read_bytes() for f in TOKENIZER_FILES if (run_dir / f).is_file()}
    header = write_container(Path(out), config=net.config.to_dict(), layers=layers,
                             other_tensors=others, files=files, precision=precision,
                             block=(params["r"], params["c"]), banks=params["B"],
                             pattern_params=params, source=str(run_dir))
    return {**header, "file_bytes": Path(out).stat().st_size}


def rebuild_model(container: Container) -> torch.nn.Module:
    """A ``transformers`` classifier built from the container alone (fp32 weights holding the
    stored values; pruned weights zero)."""
    from safetensors.torch import load as load_tensors
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from fitformer.models.loading import quiet_transformers

    cfg = dict(container.header["config"])
    try:
        config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        with quiet_transformers():
            net = AutoModelForSequenceClassification.from_config(config)
    except Exception as exc:  # noqa: BLE001
        raise FitformerError(f"the container's model config cannot be built ({exc}).") from None
    try:
        state = load_tensors(container.sections["tensors"])
    except Exception as exc:  # noqa: BLE001
        raise FitformerError(f"the container's tensors section is corrupt ({exc}).") from None
    for name in container.layer_names():
        w, _ = container.weight(name)
        state[f"{name}.weight"] = torch.from_numpy(w)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise FitformerError(f"the container's tensors do not fit its config ({str(exc)[:200]})."
                             ) from None
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise FitformerError(f"the container does not match its config: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}.")
    return net.eval()


def quantize_weights_like(net: torch.nn.Module, names: list[str], precision: str) -> None:
    """Quantise the weights of ``names`` in place as the container stores them
    (per-tensor ``ap_fixed<W, I>``, ``I`` from the kept weights' max_abs)."""
    width = width_of(precision)
    if width is None:
        return
    with torch.no_grad():
        for n in names:
            w = net.get_submodule(n).weight
            ib = int_bits(float(w.abs().max()))
            w.copy_(quantize_fixed(w, width, ib))


def compare_with_run(container: Container, run_dir: str | Path, sentences: list[str]) -> dict:
    """Logits of the rebuilt model against the masked model of ``run_dir`` at the
    container's dtype, on ``sentences``.

    Returns:
        ``{"max_abs_logit_diff", "equal", "sentences", "masks_equal"}``.
    """
    from fitformer.models.loading import load_tokenizer, resolve_model

    rebuilt = rebuild_model(container)
    net, masks, _ = _load_run(Path(run_dir))
    masks_equal = all(np.array_equal(container.weight(n)[1], masks[n].numpy())
                      for n in container.layer_names())
    quantize_weights_like(net, container.layer_names(), container.precision)
    tok = load_tokenizer(resolve_model(str(run_dir)))
    batch = tok(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        a = rebuilt(**batch).logits
        b = net(**batch).logits
    diff = float((a - b).abs().max())
    return {"max_abs_logit_diff": diff, "equal": diff == 0.0, "masks_equal": masks_equal,
            "sentences": len(sentences)}


def summary(container: Container) -> dict:
    """Layers, shapes, K1/k and sizes, as ``fitformer load`` prints them."""
    h = container.header
    return {"version": h["version"], "value_dtype": h["value_dtype"], "pattern": h["pattern"],
            "source": h["source"], "layers": len(h["layers"]),
            "hp_bytes": sum(s["length"] for s in h["sections"] if s["name"].startswith("hp:")),
            "other_bytes": sum(s["length"] for s in h["sections"]
                               if not s["name"].startswith("hp:")),
            "model_type": h["config"].get("model_type"),
            "json": json.dumps({n: {k: v[k] for k in ("shape", "K1", "k", "I")}
                                for n, v in list(h["layers"].items())[:2]})}
