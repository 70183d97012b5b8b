"""The encoder-decoder Transformer for translation (issue 9): a subword tokenizer trained
locally and a Transformer built from scratch with explicit ``nn.Linear`` projections.

The model is ``transformers.MBartForConditionalGeneration`` built from a fresh config (the
Vaswani et al. 2017 encoder-decoder in its pre-norm form, Xiong et al. 2020, with learned
positions and a final layer norm per stack, as in mBART, Liu et al. 2020): every attention
has separate
``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj`` linears (``torch.nn.Transformer`` packs
q/k/v into one ``in_proj_weight``, which pruning and the kernels would miss), the FFN is
``fc1``/``fc2``, source and target share one embedding tied to the output projection
(``lm_head``). Greedy and beam decoding with a key/value cache come from
``transformers``' ``generate``; a run folder is a ``save_pretrained`` folder (config,
safetensors, ``tokenizer.json``).

Why pre-norm: the post-norm ``MarianMTModel`` trained with the same recipe (AdamW 1e-3,
5 % warm-up) collapsed in its first full run: the encoder's output became one vector for
every position of every sentence (test BLEU 0.7). Post-norm Transformers need a long
warm-up at this learning rate (Xiong et al. 2020); pre-norm trains stably without one.
Runs made with the Marian model still load (:func:`load_translation_model` reads any
``transformers`` sequence-to-sequence folder).

The tokenizer is a joint English-French BPE (Sennrich et al. 2016) trained with the
``tokenizers`` library on the training split: NFKC normalisation, SentencePiece-style
``▁`` word boundaries (Metaspace), so ``decode(encode(s)) == NFKC(s)`` for text with
single spaces. Special tokens: ``<pad>`` 0, ``</s>`` 1 (also the decoder start: mBART's
``shift_tokens_right`` moves a target's last token, its ``</s>``, to the front), ``<unk>`` 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from fitformer.errors import FitformerError

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


@dataclass(frozen=True)
class Seq2SeqShape:
    """Architecture of the from-scratch model (defaults: 3+3 layers, width 256, 4 heads of
    64, FFN 1024, 8k BPE; the plain baseline of issue 9)."""

    vocab_size: int = 8000
    d_model: int = 256
    encoder_layers: int = 3
    decoder_layers: int = 3
    heads: int = 4
    ffn_dim: int = 1024
    max_positions: int = 128
    dropout: float = 0.1

    def as_key(self) -> dict:
        return asdict(self)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000):
    """A joint BPE tokenizer trained on ``texts``, as a ``PreTrainedTokenizerFast``.

    Raises:
        FitformerError: ``vocab_size`` below 100 or no text.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 100:
        raise FitformerError(f"--vocab-size {vocab_size} must be >= 100.")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK],
                                  show_progress=False)
    texts = list(texts)
    if not texts:
        raise FitformerError("no text to train the tokenizer on; check the dataset.")
    tok.train_from_iterator(texts, trainer)
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single=f"$A {EOS}",
                                            special_tokens=[(EOS, tok.token_to_id(EOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS,
                                   unk_token=UNK)


def new_translation_model(tokenizer, shape: Seq2SeqShape = Seq2SeqShape(), seed: int = 0):
    """A freshly initialised pre-norm encoder-decoder (``MBartForConditionalGeneration``) of
    ``shape`` for ``tokenizer``'s vocabulary: ReLU FFN, embeddings scaled by
    ``sqrt(d_model)`` and tied between encoder, decoder and ``lm_head``."""
    import torch
    from transformers import MBartConfig, MBartForConditionalGeneration

    torch.manual_seed(seed)
    cfg = MBartConfig(
        vocab_size=len(tokenizer), d_model=shape.d_model,
        encoder_layers=shape.encoder_layers, decoder_layers=shape.decoder_layers,
        encoder_attention_heads=shape.heads, decoder_attention_heads=shape.heads,
        encoder_ffn_dim=shape.ffn_dim, decoder_ffn_dim=shape.ffn_dim,
        max_position_embeddings=shape.max_positions, dropout=shape.dropout,
        attention_dropout=0.0, activation_dropout=0.0, activation_function="relu",
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=None, forced_bos_token_id=None, tie_word_embeddings=True,
        scale_embedding=True)
    return MBartForConditionalGeneration(cfg)


def load_translation_model(folder: str):
    """``(model, tokenizer)`` of a translation run folder.

    Raises:
        FitformerError: the folder is not a translation model.
    """
    from pathlib import Path

    from transformers import AutoModelForSeq2SeqLM, PreTrainedTokenizerFast

    from fitformer.models.loading import quiet_transformers

    p = Path(folder)
    if not (p / "config.json").is_file() or not (p / "tokenizer.json").is_file():
        raise FitformerError(f"{folder} is not a translation model folder (config.json and "
                             "tokenizer.json expected); train one with `fitformer finetune "
                             "--task translation`.")
    with quiet_transformers():
        model = AutoModelForSeq2SeqLM.from_pretrained(str(p))
        tok = PreTrainedTokenizerFast.from_pretrained(str(p))
    return model.eval(), tok
