"""The CPU backend: an HP sparse linear layer and the conversion of a pruned model to it.

:class:`HPLinear` computes ``y = x @ W.T + b`` from the kept weights only. Its layout is
derived from the HP in-memory form (design.md §5, :class:`fitformer.formats.HPFormat`): the
rows of one output block row (``r`` rows) keep the same number of weights, because every
kept block of that block row contributes ``B * k`` weights to each of its rows, so one count
per block row replaces per-row pointers. The C++ kernel (``hp_linear.cpp``, built once by
``torch.utils.cpp_extension.load`` and cached in ``$FITFORMER_HOME/kernels/``) has two paths:

- **tiles** (:data:`MIN_TOKENS` tokens or more): tokens in the SIMD lanes. A tile of tokens
  of ``x`` is transposed to ``[N, tile]`` fp32, and each output row accumulates
  ``w * x_t[col]`` over its kept weights only, so both levels of HP are exploited (level 1 by
  skipping blocks, level 2 by skipping weights inside them); the rows of one block row read
  the same few stripes of ``x_t``, which stay in the L1 cache.
- **GEMV** (fewer tokens, e.g. one decoder step): outputs in the SIMD lanes. Every group of
  16 output rows lists the input columns in which any of its rows keeps a weight, with the
  16 weights of each; a listed column costs one broadcast input per token. Kept blocks run
  dense, so level 1 of HP is exploited (the CPU exploits ``d1``, design.md §3). This layout is
  built on the first few-token call.

Each path is compiled for three instruction sets (:data:`ISAS`: ``generic`` vectors of the
compiler's baseline, ``avx2`` and ``avx512``) and the best one this CPU supports runs, found
at run time; ``FITFORMER_CPU_ISA=avx2`` (or ``generic``) forces a narrower one, so that one
machine tests every path. Work is split across torch's intra-op threads
(``torch.set_num_threads``).

Any mask works (rows of one block row are padded to the block row's largest count, with
zero weights); HP masks need no padding. Inference only: with gradients enabled, or when the
kernel cannot be built (no C++ compiler), the layer falls back to the masked dense
``torch.nn.functional.linear`` and says so in :attr:`HPLinear.backend`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fitformer.errors import FitformerError

_SOURCE = Path(__file__).with_name("hp_linear.cpp")
_SOURCE_INT8 = Path(__file__).with_name("hp_linear_int8.cpp")
_SOURCES = (_SOURCE, Path(__file__).with_name("hp_linear_body.h"), _SOURCE_INT8,
            *(Path(__file__).with_name(f"hp_linear_int8_{h}.h") for h in ("body", "quant")),
            Path(__file__).with_name("aligned_buffer.h"))
_DTYPES = (torch.float32, torch.bfloat16)
#: From this many tokens per call the tile path runs, below it the GEMV path
#: (benchmarks/cpu_spmm.py --tokens: the tile path's 128-token tiles are mostly empty below
#: 16 tokens).
MIN_TOKENS = 16
#: Output rows per GEMV row group (one AVX-512 vector, two AVX2 vectors).
GEMV_GROUP = 16
#: The kernel's code paths, narrowest first (codes 0, 1, 2 of the C++ op).
ISAS = ("generic", "avx2", "avx512")
#: Environment switch: ``auto`` (default, the widest path the CPU runs) or one of ISAS.
ISA_ENV = "FITFORMER_CPU_ISA"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def kernel_digest() -> str:
    """Digest of what the compiled kernel depends on (source, torch, CPU model)."""
    return hashlib.sha256(b"".join(p.read_bytes() for p in _SOURCES)
                          + torch.__version__.encode()
                          + _cpu_model().encode() + platform.machine().encode()
                          ).hexdigest()[:16]


_OFF = ("off", "0", "no", "false")


@functools.cache
def load_kernel() -> str | None:
    """Load the cached C++ kernel, building it first if needed (about 10 s with g++).

    Returns:
        ``None`` when ``torch.ops.fitformer.hp_linear`` is ready, else the reason it is not
        (no compiler, build error, unwritable cache, or ``FITFORMER_CPU_KERNEL=off``);
        callers fall back to dense kernels. The build is cached under
        ``$FITFORMER_HOME/kernels/<hash>`` keyed by the source, torch version and CPU model
        (tuned with ``-mtune=native``; on x86 the AVX2 and AVX-512 paths are compiled with
        their own target options and chosen at run time, elsewhere the code is compiled
        with ``-march=native``); a cached library is loaded directly.
        Builds are serialised by an OS file lock (released if a process dies), so a build
        killed half-way does not leave later commands waiting on torch's own lock file.
    """
    if os.environ.get("FITFORMER_CPU_KERNEL", "").strip().lower() in _OFF:
        return "FITFORMER_CPU_KERNEL=off"
    from fitformer.paths import fitformer_home

    digest = kernel_digest()
    name = f"fitformer_hp_linear_{digest}"
    build_dir = fitformer_home() / "kernels" / digest
    library = build_dir / f"{name}.so"
    if library.is_file():
        try:
            torch.ops.load_library(str(library))
            return None
        except (OSError, RuntimeError):
            pass                                    # rebuild below
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        lock = open(build_dir / "build.flock", "w")  # noqa: SIM115 - held for the build
    except OSError as exc:
        return _give_up(f"the kernel cache {build_dir} is not writable ({exc.strerror}); "
                        "set FITFORMER_HOME to a writable folder")
    import fcntl

    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)            # another process may be building
        if library.is_file():
            torch.ops.load_library(str(library))
            return None
        (build_dir / "lock").unlink(missing_ok=True)  # torch's baton, stale if here
        try:
            import ninja  # the pip wheel; torch looks for `ninja` on PATH

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass
        try:
            from torch.utils.cpp_extension import load

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load(name=name, sources=[str(_SOURCE), str(_SOURCE_INT8)],
                     extra_cflags=["-O3", *_arch_flags(), "-fopenmp"],
                     extra_ldflags=["-fopenmp"], build_directory=str(build_dir),
                     is_python_module=False, verbose=False)
        except Exception as exc:  # noqa: BLE001 - compiler and linker errors come in many kinds
            text = str(exc).strip()
            first = text.splitlines()[-1][:200] if text else type(exc).__name__
            return _give_up(f"the C++ kernel could not be built in {build_dir} ({first}); "
                            "install a C++ compiler (e.g. g++) for the HP CPU kernel")
    return None


def _arch_flags() -> list[str]:
    """x86: the baseline ISA plus per-path target regions (an AVX2 path must not use
    AVX-512 registers, so nothing is compiled for the whole native ISA); elsewhere native."""
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return ["-mtune=native"]
    return ["-march=native"]


def supported_isas() -> tuple[str, ...]:
    """The kernel's code paths this CPU runs, narrowest first (``()`` without the kernel)."""
    if load_kernel() is not None:
        return ()
    return _isas_of_cpu()


@functools.cache
def _isas_of_cpu() -> tuple[str, ...]:
    mask = int(torch.ops.fitformer.cpu_isas())
    return tuple(name for i, name in enumerate(ISAS) if mask >> i & 1)


def isa_path() -> str | None:
    """The code path the kernel runs now: ``FITFORMER_CPU_ISA`` if set (``auto`` or empty:
    the widest this CPU runs); ``None`` without the kernel.

    Raises:
        FitformerError: ``FITFORMER_CPU_ISA`` names an unknown path or one this CPU lacks.
    """
    supported = supported_isas()
    if not supported:
        return None
    want = os.environ.get(ISA_ENV, "").strip().lower()
    if want in ("", "auto"):
        return supported[-1]
    if want not in supported:
        known = "unknown" if want not in ISAS else "not supported by this CPU"
        raise FitformerError(f"{ISA_ENV}={want} is {known}; use auto or one of "
                             f"{', '.join(supported)}.")
    return want


def _give_up(reason: str) -> str:
    warnings.warn(f"fitformer: {reason}. Pruned layers run with dense kernels.", stacklevel=3)
    return reason


def kernel_status() -> dict:
    """``{"available": bool, "reason": str | None, "isa": str | None, "supported_isas":
    [...], "cpu": model name}`` of the C++ kernel (builds it); ``isa`` is the code path that
    runs (:func:`isa_path`)."""
    reason = load_kernel()
    return {"available": reason is None, "reason": reason,
            "isa": isa_path() if reason is None else None,
            "supported_isas": list(supported_isas()), "cpu": _cpu_model()}


def _layout(weight: np.ndarray, mask: np.ndarray, r: int):
    """Row-grouped layout of the kept weights: ``(group_ptr[Mb + 1], shared[Mb],
    row_base[M], cols[nnz], values[nnz])``; the rows of block row ``j`` keep
    ``group_ptr[j + 1] - group_ptr[j]`` entries each (padded with zero weights at column 0
    where a row keeps fewer); ``shared[j]``: all its rows keep the same columns (HP with
    ``d2 = 1``), so the kernel runs two rows per pass."""
    M, _ = mask.shape
    Mb = -(-M // r)
    counts = mask.sum(axis=1)
    padded = np.zeros(Mb * r, np.int64)
    padded[:M] = counts
    per_group = padded.reshape(Mb, r).max(axis=1)
    group_ptr = np.concatenate([[0], np.cumsum(per_group)])
    row_count = np.repeat(per_group, r)[:M]
    row_base = np.concatenate([[0], np.cumsum(row_count)[:-1]]).astype(np.int64)
    rows, cols = np.nonzero(mask)                   # row-major: columns ascend in each row
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    dest = row_base[rows] + (np.arange(rows.size) - first[rows])
    nnz = int(row_count.sum())
    out_cols = np.zeros(nnz, np.int32)
    out_vals = np.zeros(nnz, np.float32)
    out_cols[dest] = cols
    out_vals[dest] = weight[rows, cols]
    shared = np.zeros(Mb, bool)
    for j in range(Mb):                 # one check per block row: same columns in every row
        n, lo, hi = per_group[j], j * r, min(M, (j + 1) * r)
        block = out_cols[row_base[lo]: row_base[lo] + n * (hi - lo)].reshape(hi - lo, n)
        shared[j] = bool((block == block[:1]).all()) and bool((counts[lo:hi] == n).all())
    return group_ptr.astype(np.int64), shared, row_base, out_cols, out_vals


def _gemv_layout(weight: torch.Tensor):
    """The GEMV path's layout of a masked ``(M, N)`` fp32 weight: ``(gptr[Mg + 1] int64,
    gcols[E] int32, gvals[E, 16] fp32)``; row group ``g`` (rows ``16 g .. 16 g + 15``) lists
    the columns in which any of its rows has a non-zero weight, with its 16 rows' weights
    there (zeros where pruned or beyond ``M``)."""
    M, N = weight.shape
    Mg = -(-M // GEMV_GROUP)
    w = torch.zeros(Mg * GEMV_GROUP, N)
    w[:M] = weight
    w = w.reshape(Mg, GEMV_GROUP, N)
    listed = (w != 0).any(dim=1)                    # [Mg, N]
    g, c = torch.nonzero(listed, as_tuple=True)     # group-major, columns ascending
    gptr = torch.zeros(Mg + 1, dtype=torch.int64)
    gptr[1:] = torch.cumsum(listed.sum(dim=1), 0)
    gvals = w[g, :, c].contiguous()                 # [E, 16]
    return gptr, c.to(torch.int32), gvals


def check_layer_args(who: str, weight: torch.Tensor, mask: torch.Tensor,
                     bias: torch.Tensor | None, r: int) -> None:
    """The shape checks of an HP layer's constructor (``who`` names it in the message).

    Raises:
        FitformerError: ``weight`` not 2-D or ``mask`` of another shape, ``bias`` not
            ``(M,)``, or ``r < 1``.
    """
    if weight.dim() != 2 or tuple(mask.shape) != tuple(weight.shape):
        raise FitformerError(f"{who}: mask {tuple(mask.shape)} must match weight "
                             f"{tuple(weight.shape)} (M, N).")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise FitformerError(f"{who}: bias {tuple(bias.shape)} must be ({weight.shape[0]},).")
    if r < 1:
        raise FitformerError(f"{who}: r = {r} must be >= 1.")


class HPLinear(nn.Module):
    """A pruned ``nn.Linear`` run by the HP CPU kernel (inference).

    Args:
        weight: ``(M, N)`` float tensor; mask: ``(M, N)`` bool (True = kept).
        bias: ``(M,)`` or ``None``. r: rows per block (design.md §3, default 16).
        dtype: ``torch.float32`` or ``torch.bfloat16``: the dtype of activations and of
            the weights (bf16 weights and bias are held exactly in fp32; products are
            accumulated in fp32 and rounded once to ``dtype``, as oneDNN's bf16 GEMM does).

    Input ``(..., N)`` of ``dtype``, output ``(..., M)`` of the same dtype; equal to
    ``F.linear(x, weight * mask, bias)`` up to the order of fp32 additions.

    Raises:
        FitformerError: shapes of weight, mask and bias disagree, or an unsupported dtype.
    """

    def __init__(self, weight: torch.Tensor, mask: torch.Tensor,
                 bias: torch.Tensor | None = None, *, r: int = 16,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        check_layer_args("HPLinear", weight, mask, bias, r)
        if dtype not in _DTYPES:
            raise FitformerError(f"HPLinear: dtype {dtype} is not supported; use float32 or "
                                 "bfloat16.")
        self.out_features, self.in_features = (int(s) for s in weight.shape)
        self.r, self.dtype = r, dtype
        mask_np = mask.detach().cpu().numpy().astype(bool)
        # A bf16 layer computes with its bf16 weights (held exactly in fp32).
        w = weight.detach().to("cpu", dtype).to(torch.float32).numpy()
        group_ptr, shared, row_base, cols, values = _layout(w, mask_np, r)
        self.register_buffer("group_ptr", torch.from_numpy(group_ptr))
        self.register_buffer("shared", torch.from_numpy(shared))
        self.register_buffer("row_base", torch.from_numpy(row_base))
        self.register_buffer("cols", torch.from_numpy(cols))
        self.register_buffer("values", torch.from_numpy(values))
        self.register_buffer("bias", None if bias is None
                             else bias.detach().to("cpu", dtype).to(torch.float32).clone())
        self.nnz = int(mask_np.sum())
        self._dense: torch.Tensor | None = None
        self._gemv: tuple | None = None             # the GEMV layout, built on first use

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: torch.Tensor | None = None, *,
                    r: int = 16, dtype: torch.dtype | None = None) -> HPLinear:
        """The HP layer of ``linear`` with ``mask`` (default: its non-zero weights)."""
        w = linear.weight.detach()
        m = (w != 0) if mask is None else mask.to(torch.bool)
        return cls(w, m, linear.bias, r=r,
                   dtype=dtype if dtype is not None else w.dtype)

    @classmethod
    def from_encoded(cls, encoded, bias: torch.Tensor | None = None, *,
                     dtype: torch.dtype = torch.float32) -> HPLinear:
        """The HP layer of an HP-format matrix (:meth:`fitformer.formats.HPFormat.encode`)."""
        from fitformer.formats.formats import HPFormat

        p = encoded.params
        values, mask = HPFormat(p["r"], p["c"], p["B"]).decode(encoded)
        return cls(torch.from_numpy(values), torch.from_numpy(mask), bias, r=p["r"],
                   dtype=dtype)

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.out_features * self.in_features)

    @property
    def backend(self) -> str:
        """``"hp-cpu"`` (the C++ kernel is available) or ``"dense-fallback"`` with the
        reason. Calls with gradients enabled run the masked dense layer either way; calls
        with fewer than :data:`MIN_TOKENS` tokens run the kernel's GEMV path."""
        reason = load_kernel()
        return "hp-cpu" if reason is None else f"dense-fallback: {reason}"

    def dense_weight(self) -> torch.Tensor:
        """The masked weight ``(M, N)`` fp32, rebuilt from the kept entries."""
        w = torch.zeros(self.out_features, self.in_features)
        rows = torch.repeat_interleave(
            torch.arange(self.out_features),
            (self.group_ptr[1:] - self.group_ptr[:-1]).repeat_interleave(self.r)
            [: self.out_features])
        w.index_put_((rows, self.cols.long()), self.values.float(), accumulate=True)
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise FitformerError(f"HPLinear: input of shape {tuple(x.shape)} does not end in "
                                 f"{self.in_features} features.")
        if x.dtype not in _DTYPES:
            raise FitformerError(f"HPLinear: input dtype {x.dtype} is not supported; use "
                                 "float32 or bfloat16.")
        tokens = x.numel() // max(1, self.in_features)
        if x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad) \
                or 0 in (self.in_features, self.out_features) or load_kernel() is not None:
            return self._masked_dense(x)
        isa = ISAS.index(isa_path())
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).contiguous()
        if tokens < MIN_TOKENS:
            gptr, gcols, gvals, gbias = self._gemv_buffers()
            y = torch.ops.fitformer.hp_gemv(x2, gptr, gcols, gvals, gbias,
                                            self.out_features, isa)
        else:
            values = self.values if self.values.dtype == torch.float32 \
                else self.values.float()
            bias = self.bias if self.bias is None or self.bias.dtype == torch.float32 \
                else self.bias.float()
            y = torch.ops.fitformer.hp_linear(x2, self.group_ptr, self.shared, self.r,
                                              self.row_base, self.cols, values, bias,
                                              self.out_features, isa)
        return y.reshape(*lead, self.out_features)

    def _gemv_buffers(self):
        """The GEMV path's layout (:func:`_gemv_layout`) and padded bias, built once."""
        if self._gemv is None:
            gptr, gcols, gvals = _gemv_layout(self.dense_weight())
            gbias = None
            if self.bias is not None:
                gbias = torch.zeros((len(gptr) - 1) * GEMV_GROUP)
                gbias[: self.out_features] = self.bias.float()
            self._gemv = (gptr, gcols, gvals, gbias)
        return self._gemv

    def _masked_dense(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear`` on the masked weight (rebuilt once): gradients, other devices, or no
        kernel."""
        if self._dense is None:
            self._dense = self.dense_weight()
        b = None if self.bias is None else self.bias.to(x.device, x.dtype)
        return nn.functional.linear(x, self._dense.to(x.device, x.dtype), b)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"density={self.density:.3f}, r={self.r}, dtype={self.dtype}")


def convert(model: nn.Module, masks: dict[str, torch.Tensor] | None = None, *,
            r: int = 16, dtype: torch.dtype | None = None) -> dict:
    """Swap every pruned ``nn.Linear`` of ``model`` for an :class:`HPLinear`, in place.

    Args:
        model: a module (e.g. a model loaded from a pruned run).
        masks: bool masks by module name (a run's ``masks.safetensors``); default: the
            prunable linears (:func:`fitformer.models.layers.linear_layers`) that have zero
            weights, each with the mask ``weight != 0``.
        r: rows per block (the run's block height). dtype: the layers' dtype (default:
            each linear's weight dtype; float32 or bfloat16; cast the model first, e.g.
            ``model.bfloat16()``, so that activations match), or ``torch.int8``: the
            int8 layer :class:`fitformer.kernels.int8.HPLinearInt8` (float32 model;
            weights per-row int8, activations quantised per token).

    Returns:
        ``{"converted": [names], "backend": "hp-cpu" | "dense-fallback: ..."}``.

    Raises:
        FitformerError: a mask names no ``nn.Linear`` of the model or has another shape, or
            a layer is neither float32 nor bfloat16.
    """
    from fitformer.models.layers import linear_layers

    modules = dict(model.named_modules())
    if masks is None:
        masks = {}
        for info in linear_layers(model):
            w = modules[info.name].weight
            if info.prunable and bool((w == 0).any()):
                masks[info.name] = w != 0
    converted = []
    for name, mask in masks.items():
        lin = modules.get(name)
        if not isinstance(lin, nn.Linear):
            raise FitformerError(f"convert: mask {name!r} names no nn.Linear of the model; "
                                 "give masks of the same model (its masks.safetensors).")
        if tuple(mask.shape) != tuple(lin.weight.shape):
            raise FitformerError(f"convert: mask {name!r} is {tuple(mask.shape)}, the weight "
                                 f"is {tuple(lin.weight.shape)}; give masks of this model.")
        if dtype != torch.int8 and (dtype or lin.weight.dtype) not in _DTYPES:
            raise FitformerError(f"convert: {name} is {lin.weight.dtype}; the HP CPU kernel "
                                 "runs float32 or bfloat16 models (cast with .float()).")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if dtype == torch.int8:
            from fitformer.kernels.int8 import HPLinearInt8

            layer = HPLinearInt8.from_linear(lin, torch.as_tensor(mask), r=r)
        else:
            layer = HPLinear.from_linear(lin, torch.as_tensor(mask), r=r, dtype=dtype)
        setattr(parent, child, layer)
        converted.append(name)
    reason = load_kernel()
    name = "hp-cpu-int8" if dtype == torch.int8 else "hp-cpu"
    fallback = "reference" if dtype == torch.int8 else "dense-fallback"
    return {"converted": converted,
            "backend": name if reason is None else f"{fallback}: {reason}"}
