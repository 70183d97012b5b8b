"""Benchmark: the HP CPU kernel vs dense, torch BSR and scipy CSR, side by side (issues 8, 20).

For each MiniLM weight shape (384x384 q/k/v/attn_out, 1536x384 ffn_in, 384x1536 ffn_out),
sparsity (0.5, 0.7, 0.8, 0.9, 0.95) and HP split (``d2`` in 1, 0.75, 0.5), an HP mask is
made on a random normal weight (timing does not depend on the values) and
``y = x @ W.T + b`` is timed for ``x`` of 32 x 128 tokens with:

- ``dense``: ``torch.nn.functional.linear`` on the masked weight, same dtype;
- ``torch_bsr``: ``W`` as ``to_sparse_bsr((16, 16))`` times ``x.T`` (fp32 only);
- ``scipy_csr``: ``scipy.sparse.csr_array(W) @ x.T`` (fp32 only; scipy is single-threaded);
- ``hp[ISA]``: :class:`fitformer.kernels.cpu.HPLinear` (the same mask) on each code path
  of ``--isas`` (default: AVX2 and AVX-512 where this CPU runs them; ``FITFORMER_CPU_ISA``
  is set around each call), so both paths are measured in one run. Fewer than 16 tokens
  (``--tokens 1``) run the kernel's GEMV path.

Repeats are interleaved (dense, bsr, csr, hp[avx2], hp[avx512], dense, ...) so that the
machine's noise hits all alike; each figure is the median after one warm-up. glibc is asked
to keep freed memory (:func:`keep_freed_memory`) so that no method's output buffer pays
page faults. Extra rows (``dtype`` = ``"bf16"``) time the kernel and dense in bfloat16, and
one row per shape and sparsity compares the kernel at fp32 with the host's fastest dense
dtype. ``--int8`` adds rows (``dtype`` = ``"int8"``) timing the int8 HP kernel
(:class:`fitformer.kernels.int8.HPLinearInt8`) on each path against dense fp32 and against
PyTorch's dynamic int8 linear (``torch.ao.quantization.quantize_dynamic``, the peer at equal
precision: int8 weights, inputs quantised per call). Prints the CPU model, the code paths,
the machine load and the targets of issue 20 on every path (sparsity 0.9, d2 = 1: >= 4x
dense; 0.5, d2 = 1: >= 1.2x dense; faster than BSR and CSR at every sparsity >= 0.7).

    .venv/bin/python benchmarks/cpu_spmm.py [--repeats 11] [--tokens 4096] [--isas avx2,avx512]
        [--shapes 1536x384] [--sparsities 0.5,0.9] [--splits 1,0.5] [--no-bf16] [--int8]
        [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import statistics
import time
from functools import partial

import numpy as np
import torch

SHAPES = ((384, 384), (1536, 384), (384, 1536))
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)
SPLITS = (1.0, 0.75, 0.5)


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from the heap and keep freed memory (mallopt
    M_MMAP_THRESHOLD and M_TRIM_THRESHOLD = 1 GiB), so that no method pays page faults for
    its output buffer because another method's free returned memory to the kernel (seen
    here: torch BSR, then a 25 MB output, doubled a 4 ms kernel's time). Applies to every
    method alike; False where glibc's mallopt is not available."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 1 << 30)) and bool(libc.mallopt(-1, 1 << 30))
    except (OSError, AttributeError):
        return False


def parse_with_threads(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse ``ap``'s arguments plus ``--threads N`` (torch's intra-op threads, and ONNX
    Runtime's where used) and ``--stat median|min`` (what :func:`measure` reports), applied
    before anything runs."""
    ap.add_argument("--threads", type=int, default=None,
                    help="torch (and ONNX Runtime) threads; default: torch's")
    ap.add_argument("--stat", choices=sorted(STAT), default="median",
                    help="statistic of the repeats (min: for a machine under load)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    global _stat
    _stat = STAT[args.stat]
    return args


def kernel_paths(ap: argparse.ArgumentParser, isas_arg: str | None
                 ) -> tuple[dict, list[str], list[str]]:
    """``(kernel_status(), the code paths this CPU runs, the paths to time)``: ``--isas``
    when given (each checked against this CPU), else AVX2 and AVX-512 where they run, else
    the widest path. Exits with a message when the kernel cannot build or
    ``FITFORMER_CPU_ISA`` is invalid."""
    from fitformer.errors import FitformerError
    from fitformer.kernels.cpu import kernel_status, supported_isas

    try:
        status = kernel_status()
    except FitformerError as e:
        ap.error(str(e))
    if not status["available"]:
        raise SystemExit(f"the HP kernel is not available: {status['reason']}")
    runs = supported_isas()
    isas = (isas_arg.split(",") if isas_arg
            else [i for i in ("avx2", "avx512") if i in runs] or [runs[-1]])
    for isa in isas:
        if isa not in runs:
            ap.error(f"--isas {isa}: this CPU runs {', '.join(runs)}")
    return status, list(runs), isas


def _timer(fn):
    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    return run


#: The statistic :func:`measure` reports: ``median`` (default) or ``min`` (``--stat min``: on
#: a machine whose load exceeds its CPUs, the fastest repeat is the one the scheduler did
#: not interrupt, closest to what the code costs).
STAT = {"median": statistics.median, "min": min}
_stat = statistics.median


def measure(fns: dict, repeats: int) -> dict:
    """Median (or ``--stat``) ms of each callable, interleaved, after one warm-up each."""
    timers = {k: _timer(f) for k, f in fns.items() if f is not None}
    for t in timers.values():
        t()
    samples = {k: [] for k in timers}
    for _ in range(repeats):
        for k, t in timers.items():
            samples[k].append(t())
    return {k: _stat(v) for k, v in samples.items()}


def on_isa(isa: str, layer, x):
    """``layer(x)`` on the kernel's code path ``isa`` (FITFORMER_CPU_ISA for this call)."""
    from fitformer.kernels.cpu import ISA_ENV

    saved = os.environ.get(ISA_ENV)
    os.environ[ISA_ENV] = isa
    try:
        return layer(x)
    finally:
        if saved is None:
            del os.environ[ISA_ENV]
        else:
            os.environ[ISA_ENV] = saved


def _parse_shapes(text: str) -> tuple:
    return tuple(tuple(int(v) for v in s.split("x")) for s in text.split(","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--tokens", type=int, default=32 * 128, help="rows of x (32 x 128)")
    ap.add_argument("--isas", default=None,
                    help="comma-separated code paths (default: avx2 and avx512 where run)")
    ap.add_argument("--shapes", default=None, help="e.g. 1536x384,384x1536 (M x N)")
    ap.add_argument("--sparsities", default=None, help="e.g. 0.5,0.9")
    ap.add_argument("--splits", default=None, help="d2 values, e.g. 1,0.5")
    ap.add_argument("--no-bf16", action="store_true", help="fp32 rows only")
    ap.add_argument("--int8", action="store_true",
                    help="also time the int8 kernel against PyTorch's dynamic int8 linear")
    ap.add_argument("--json", action="store_true")
    args = parse_with_threads(ap)
    if args.tokens < 1 or args.repeats < 1:
        ap.error("--tokens and --repeats must be >= 1")

    import scipy.sparse

    from fitformer.kernels.cpu import HPLinear
    from fitformer.kernels.int8 import HPLinearInt8
    from fitformer.sparsity.patterns import make_pattern

    linear = torch.nn.functional.linear
    heap_kept = keep_freed_memory()
    status, runs, isas = kernel_paths(ap, args.isas)
    shapes = _parse_shapes(args.shapes) if args.shapes else SHAPES
    sparsities = tuple(float(v) for v in args.sparsities.split(",")) if args.sparsities \
        else SPARSITIES
    splits = tuple(float(v) for v in args.splits.split(",")) if args.splits else SPLITS
    load = os.getloadavg()[0]
    gen = torch.Generator().manual_seed(0)
    rows = []

    def hp_fns(layer, x, prefix="hp"):
        return {f"{prefix}[{isa}]": partial(on_isa, isa, layer, x) for isa in isas}

    def row(M, N, s, d2, dtype, layer, t, dense_key="dense", baselines=True):
        return {"shape": [M, N], "sparsity": s, "d2": d2, "dtype": dtype,
                "achieved_sparsity": round(1 - layer.density, 4),
                "dense_ms": t[dense_key],
                "torch_bsr_ms": t["torch_bsr"] if baselines else None,
                "scipy_csr_ms": t["scipy_csr"] if baselines else None,
                "hp_ms": {isa: t[f"hp[{isa}]"] for isa in isas},
                "speedup_vs_dense": {isa: t[dense_key] / t[f"hp[{isa}]"] for isa in isas}}

    for M, N in shapes:
        w = torch.randn(M, N, generator=gen)
        b = torch.randn(M, generator=gen)
        x = torch.randn(args.tokens, N, generator=gen)
        xb = x.bfloat16()
        xt_np = np.ascontiguousarray(x.numpy().T)
        fastest = "fp32"
        if not args.no_bf16:
            dense_dtype_ms = measure({
                "fp32": partial(linear, x, w, b),
                "bf16": partial(linear, xb, w.bfloat16(), b.bfloat16())},
                args.repeats)
            fastest = min(dense_dtype_ms, key=dense_dtype_ms.get)
        for s in sparsities:
            for d2 in splits:
                mask = make_pattern("hp", level2_density=d2).mask(w, s)
                wm = w * mask
                hp = HPLinear(wm, mask, b)
                bsr = wm.to_sparse_bsr((16, 16))
                csr = scipy.sparse.csr_array(wm.numpy())
                with torch.inference_mode():
                    ref = torch.nn.functional.linear(x, wm, b)
                    err = max(float((on_isa(i, hp, x) - ref).abs().max() / ref.abs().max())
                              for i in isas)
                    t = measure({"dense": partial(linear, x, wm, b),
                                 "torch_bsr": partial(operator.matmul, bsr, x.T),
                                 "scipy_csr": partial(operator.matmul, csr, xt_np),
                                 **hp_fns(hp, x)}, args.repeats)
                rows.append({**row(M, N, s, d2, "fp32", hp, t), "max_rel_err": err})
                if args.int8:
                    q8 = HPLinearInt8(wm, mask, b)
                    lin = torch.nn.Linear(N, M)
                    with torch.no_grad():
                        lin.weight.copy_(wm)
                        lin.bias.copy_(b)
                    dyn = torch.ao.quantization.quantize_dynamic(
                        torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
                    with torch.inference_mode():
                        t8 = measure({"dense": partial(linear, x, wm, b),
                                      "torch_int8": partial(dyn, x), **hp_fns(q8, x)},
                                     args.repeats)
                    rows.append({**row(M, N, s, d2, "int8", hp, t8, baselines=False),
                                 "torch_int8_ms": t8["torch_int8"],
                                 "speedup_vs_torch_int8": {
                                     i: t8["torch_int8"] / t8[f"hp[{i}]"] for i in isas}})
            if args.no_bf16:
                continue
            # bf16 at the default split; and fp32 kernel vs the fastest dense dtype.
            mask = make_pattern("hp").mask(w, s)
            wm = w * mask
            hpb, hp32 = HPLinear(wm, mask, b, dtype=torch.bfloat16), HPLinear(wm, mask, b)
            wmb, bb = wm.bfloat16(), b.bfloat16()
            with torch.inference_mode():
                t = measure({"dense": partial(linear, xb, wmb, bb), **hp_fns(hpb, xb)},
                            args.repeats)
                t32 = measure({"dense": partial(linear, xb, wmb, bb) if fastest == "bf16"
                               else partial(linear, x, wm, b), **hp_fns(hp32, x)},
                              args.repeats)
            d2_default = make_pattern("hp").default_d2(1 - s)
            rows.append(row(M, N, s, d2_default, "bf16", hpb, t, baselines=False))
            rows.append(row(M, N, s, d2_default, f"fp32 vs fastest dense ({fastest})", hp32,
                            t32, baselines=False))
    meta = {"cpu": status["cpu"], "isas": isas, "supported_isas": list(runs),
            "load_avg_1min_start": load, "load_avg_1min_end": os.getloadavg()[0],
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "tokens": args.tokens, "repeats": args.repeats, "stat": args.stat,
            "malloc_keeps_memory": heap_kept,
            "token_path": "gemv" if args.tokens < _min_tokens() else "tiles"}
    targets = _targets(rows, isas)
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows, "targets": targets}, indent=1))
        return
    print(f"CPU {meta['cpu']}; kernel code paths measured: {', '.join(isas)} (this CPU runs "
          f"{', '.join(runs)}); {meta['token_path']} path")
    print(f"machine load (1 min) {load:.2f} -> {meta['load_avg_1min_end']:.2f} on "
          f"{meta['cpus']} CPUs; torch threads {meta['threads']}; x = {args.tokens} tokens; "
          f"{args.stat} of {args.repeats}, interleaved")
    hp_head = "".join(f" {'hp[' + i + ']':>12}" for i in isas)
    x_head = "".join(f" {'x dense[' + i + ']':>16}" for i in isas)
    print(f"{'shape':>10} {'sp':>5} {'d2':>5} {'dtype':>24} {'dense':>8} {'bsr':>8} "
          f"{'csr':>8}{hp_head}{x_head}")
    fmt = lambda v: f"{v:8.3f}" if v is not None else f"{'-':>8}"  # noqa: E731
    for r in rows:
        print(f"{r['shape'][0]:>4}x{r['shape'][1]:<5} {r['sparsity']:5.2f} {r['d2']:5.2f} "
              f"{r['dtype']:>24} {fmt(r['dense_ms'])} {fmt(r['torch_bsr_ms'])} "
              f"{fmt(r['scipy_csr_ms'])}"
              + "".join(f" {r['hp_ms'][i]:12.3f}" for i in isas)
              + "".join(f" {r['speedup_vs_dense'][i]:15.2f}x" for i in isas))
    for r in rows:
        if r["dtype"] == "int8":
            print(f"int8 {r['shape'][0]}x{r['shape'][1]} sp {r['sparsity']:.2f} d2 "
                  f"{r['d2']:.2f}: torch dynamic int8 {r['torch_int8_ms']:.3f} ms; int8 HP "
                  "kernel " + ", ".join(f"[{i}] {r['hp_ms'][i]:.3f} ms "
                                        f"({r['speedup_vs_torch_int8'][i]:.2f}x torch int8)"
                                        for i in isas))
    print("\ntargets (issue 20, fp32, on every code path):")
    for line in targets["lines"]:
        print("  " + line)


def _min_tokens() -> int:
    from fitformer.kernels.cpu import MIN_TOKENS

    return MIN_TOKENS


def _targets(rows: list, isas: list) -> dict:
    """Issue 20's one-layer targets per code path, on the fp32 rows measured."""
    fp32 = [r for r in rows if r["dtype"] == "fp32"]
    lines, met = [], {}
    for isa in isas:
        for s, target in ((0.9, 4.0), (0.5, 1.2)):
            got = [r["speedup_vs_dense"][isa] for r in fp32
                   if r["sparsity"] == s and r["d2"] == 1.0]
            if got:
                ok = min(got) >= target
                met[f"{isa} sparsity {s} d2 1"] = ok
                lines.append(f"{isa}: sparsity {s}, d2 = 1: {min(got):.2f}x - {max(got):.2f}x "
                             f"dense over the shapes (target >= {target}x): "
                             f"{'met' if ok else 'MISSED'}")
        high = [r for r in fp32 if r["sparsity"] >= 0.7]
        if high:
            beaten = [r for r in high
                      if r["hp_ms"][isa] < min(r["torch_bsr_ms"], r["scipy_csr_ms"])]
            met[f"{isa} beats bsr and csr"] = len(beaten) == len(high)
            lines.append(f"{isa}: faster than torch BSR and scipy CSR at sparsity >= 0.7: "
                         f"{len(beaten)} of {len(high)} rows (target: all)")
    return {"met": met, "lines": lines}


if __name__ == "__main__":
    main()
