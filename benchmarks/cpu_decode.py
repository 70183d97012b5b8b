"""Benchmark: one greedy decoding step on the CPU, HP kernel (GEMV path) vs dense (issue 20).

The translation model's shape (:class:`fitformer.models.seq2seq.Seq2SeqShape`: pre-norm
mBART, 3 + 3 layers, width 256, FFN 1024, 8k vocabulary) with random weights (timing does
not depend on the values), HP masks on every prunable linear (default: sparsity 0.8 with
``d2 = 1``), batch 1:

- **linears**: the pruned linears one decoder step runs (per layer: self-attention q, k, v,
  out; cross-attention q, out; fc1, fc2; cross-attention k, v run once per sentence), one
  token each, :class:`fitformer.kernels.cpu.HPLinear` on each code path of ``--isas`` vs
  ``F.linear`` on the masked weights;
- **whole step**: ``generate`` of ``--tgt-len`` tokens from ``--src-len`` source tokens
  (key/value cache), the model converted with :func:`fitformer.convert` vs the masked dense
  model, divided by the tokens; the unpruned ``lm_head`` (8000 x 256 = 2.05M weights, tied to
  the embeddings), attention and per-step overhead bound it.

Repeats are interleaved; medians; the machine load and the CPU model are printed.

    .venv/bin/python benchmarks/cpu_decode.py [--sparsity 0.8] [--level2-density 1]
        [--repeats 21] [--isas avx2,avx512] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cpu_spmm import (  # noqa: E402
    keep_freed_memory,
    kernel_paths,
    measure,
    on_isa,
    parse_with_threads,
)


class _Vocab:
    """What :func:`new_translation_model` reads of a tokenizer."""

    pad_token_id, eos_token_id = 0, 1

    def __len__(self) -> int:
        from fitformer.models.seq2seq import Seq2SeqShape

        return Seq2SeqShape().vocab_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--level2-density", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--src-len", type=int, default=32)
    ap.add_argument("--tgt-len", type=int, default=32)
    ap.add_argument("--isas", default=None)
    ap.add_argument("--json", action="store_true")
    args = parse_with_threads(ap)

    from fitformer.kernels.cpu import HPLinear, convert
    from fitformer.models.layers import linear_layers
    from fitformer.models.seq2seq import new_translation_model
    from fitformer.sparsity.patterns import make_pattern

    keep_freed_memory()
    status, _, isas = kernel_paths(ap, args.isas)
    load = os.getloadavg()[0]
    model = new_translation_model(_Vocab()).eval()
    pattern = make_pattern("hp", level2_density=args.level2_density)
    masks = {}
    with torch.no_grad():
        for info in linear_layers(model):
            if info.prunable:
                lin = model.get_submodule(info.name)
                masks[info.name] = pattern.mask(lin.weight, args.sparsity)
                lin.weight.mul_(masks[info.name])
    # The linears of one decoder step (cross-attention k, v run once per sentence).
    step = [n for n in masks if ".decoder." in n and "encoder_attn.k_proj" not in n
            and "encoder_attn.v_proj" not in n]
    dense = [model.get_submodule(n) for n in step]
    hp = [HPLinear.from_linear(m, masks[n]) for n, m in zip(step, dense, strict=True)]
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(1, m.in_features, generator=gen) for m in dense]

    def run_all(layers, isa=None):
        for layer, x in zip(layers, xs, strict=True):
            if isa is None:
                layer(x)
            else:
                on_isa(isa, layer, x)

    with torch.inference_mode():
        t_lin = measure({"dense": lambda: run_all(dense),
                         **{f"hp[{i}]": (lambda i=i: run_all(hp, i)) for i in isas}},
                        args.repeats)
    # Whole greedy decode, per token.
    sparse_model = copy.deepcopy(model)
    convert(sparse_model, masks)
    ids = torch.randint(2, len(_Vocab()), (1, args.src_len), generator=gen)

    def translate(m, isa=None):
        def go():
            return m.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                              max_new_tokens=args.tgt_len, min_new_tokens=args.tgt_len,
                              num_beams=1, do_sample=False)
        return go() if isa is None else on_isa(isa, lambda _: go(), None)

    with torch.inference_mode():
        t_gen = measure({"dense": lambda: translate(model),
                         **{f"hp[{i}]": (lambda i=i: translate(sparse_model, i))
                            for i in isas}}, max(3, args.repeats // 3))
    lm_head = model.get_submodule("lm_head")
    xh = torch.randn(1, lm_head.in_features, generator=gen)
    with torch.inference_mode():
        t_head = measure({"lm_head": lambda: lm_head(xh)}, args.repeats)["lm_head"]
    out = {"cpu": status["cpu"], "isas": isas, "load_avg_1min_start": load,
           "load_avg_1min_end": os.getloadavg()[0], "threads": torch.get_num_threads(),
           "sparsity": args.sparsity, "level2_density": args.level2_density,
           "step_linears": len(step), "linears_ms": t_lin,
           "linears_speedup": {i: t_lin["dense"] / t_lin[f"hp[{i}]"] for i in isas},
           "generate_ms_per_token": {k: v / args.tgt_len for k, v in t_gen.items()},
           "generate_speedup": {i: t_gen["dense"] / t_gen[f"hp[{i}]"] for i in isas},
           "lm_head_ms": t_head, "src_len": args.src_len, "tgt_len": args.tgt_len}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"CPU {out['cpu']}; code paths {', '.join(isas)}; machine load (1 min) {load:.2f} "
          f"-> {out['load_avg_1min_end']:.2f} on {os.cpu_count()} CPUs; torch threads "
          f"{out['threads']}; {args.stat} of {args.repeats}, interleaved")
    print(f"HP {args.sparsity} (d2 = {args.level2_density}), batch 1, one token per step")
    print(f"  {len(step)} pruned linears of one decoder step: dense {t_lin['dense']:.3f} ms; "
          + "; ".join(f"hp[{i}] {t_lin[f'hp[{i}]']:.3f} ms ({out['linears_speedup'][i]:.2f}x)"
                      for i in isas))
    g = out["generate_ms_per_token"]
    print(f"  whole greedy step ({args.src_len} source tokens, {args.tgt_len} generated): "
          f"dense {g['dense']:.3f} ms/token; "
          + "; ".join(f"hp[{i}] {g[f'hp[{i}]']:.3f} ms/token "
                      f"({out['generate_speedup'][i]:.2f}x)" for i in isas))
    print(f"  unpruned lm_head (8000 x 256) alone: {t_head:.3f} ms per step")
    print("target (issue 20): decoder's pruned linears >= 1.8x dense: "
          + ", ".join(f"{i} {'met' if out['linears_speedup'][i] >= 1.8 else 'MISSED'}"
                      for i in isas))


if __name__ == "__main__":
    main()
