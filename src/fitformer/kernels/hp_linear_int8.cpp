// int8 HP sparse linear layer for the CPU: y[T, M] = sx[t] sw[o] (xq[T, N] . wq[M, N]^T) + b,
// with int8 weights (one symmetric scale per output row, sw) and int8 activations quantised
// per token at run time (symmetric, sx = max|x[t]| / 127, round to nearest even), products
// accumulated exactly in int32 (|xq|, |wq| <= 127: 127^2 * N < 2^31 for N < 133,000).
// The dynamic quantisation of ONNX Runtime's and PyTorch's int8 linear layers, with a
// symmetric per-token activation scale instead of their per-tensor asymmetric one.
//
// Layout (built by fitformer.kernels.int8 from the mask), in column quads (4 columns):
//   qptr[Mb + 1] int64  block row j (rows j*r .. j*r+r-1) lists the quads [qptr[j], qptr[j+1])
//                       in which any of its rows keeps a weight (level 1 of HP: pruned blocks
//                       are never listed; kept blocks run dense inside, like the GEMV path);
//   qcols[E]     int32  the quad index (columns 4q .. 4q+3) of each listed entry;
//   w4[E * r]    int32  entry e, row i of the block row: its 4 int8 weights (zero where pruned)
//                       packed little-endian, column 4q in the lowest byte;
//   wsum[Mb * r] int32  per row, the sum of its int8 weights (the VNNI path's offset);
//   wscale[M]    float  sw; bias[M] float or none.
// Strategy: tokens in SIMD lanes, as the fp32 tile path. Each tile of TILE tokens is
// quantised and packed once: xp[q][t] holds the 4 int8 inputs of quad q for token t. Then
// RR rows of one block row share every load of xp (a register-blocked micro-kernel):
//   VNNI (AVX-512 VNNI): vpdpbusd, 4 multiply-adds per 32-bit lane and instruction; the inputs
//     go as unsigned bytes xq + 128 and the row's 128 * wsum is subtracted at the end;
//   AVX2 / AVX-512 without VNNI / generic: vpmaddwd on 16-bit pairs (2 per lane), or scalar.
// Work per tile: 4 multiply-adds per listed quad and row.
#include <torch/library.h>
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "aligned_buffer.h"
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__)
#define FITFORMER_INT8_X86 1
#include <immintrin.h>
#endif

namespace {

enum Int8Path : int64_t { I8_GENERIC = 0, I8_AVX2 = 1, I8_VNNI = 2 };

struct Int8Args {
  const float* x;
  int64_t T, N, M, Mb, r, Nq;
  const int64_t* qptr;
  const int32_t* qcols;
  const int32_t* w4;
  const int32_t* wsum;
  const float* wscale;
  const float* bias;
  float* y;
  int64_t row_splits, rows_per_split;
};

using Words = AlignedBuffer<int32_t>;

// ---- generic: scalar int32 arithmetic on sign-extended bytes.
namespace i8_generic {
constexpr int64_t TILE = 16;
#include "hp_linear_int8_quant.h"
inline int32_t dot4(int32_t xw, int32_t ww) {
  int32_t s = 0;
  for (int b = 0; b < 4; ++b)
    s += static_cast<int32_t>(static_cast<int8_t>(xw >> (8 * b))) *
         static_cast<int32_t>(static_cast<int8_t>(ww >> (8 * b)));
  return s;
}
void items(const Int8Args& a, int64_t begin, int64_t end) {
  Words xp(a.Nq * TILE);
  float sx[TILE];
  int32_t acc[TILE];
  for (int64_t item = begin; item < end; ++item) {
    const int64_t tile = item / a.row_splits, split = item % a.row_splits;
    const int64_t t0 = tile * TILE, nt = std::min(TILE, a.T - t0);
    const int64_t j0 = split * a.rows_per_split, j1 = std::min(a.Mb, j0 + a.rows_per_split);
    if (j0 >= j1) continue;
    quantise_tile(a, t0, nt, 0, xp.get(), sx);
    for (int64_t j = j0; j < j1; ++j)
      for (int64_t i = 0; i < a.r && j * a.r + i < a.M; ++i) {
        std::fill(acc, acc + TILE, 0);
        for (int64_t e = a.qptr[j]; e < a.qptr[j + 1]; ++e) {
          const int32_t w = a.w4[e * a.r + i];
          const int32_t* xq = xp.get() + static_cast<int64_t>(a.qcols[e]) * TILE;
          for (int64_t t = 0; t < nt; ++t) acc[t] += dot4(xq[t], w);
        }
        const int64_t o = j * a.r + i;
        const float sw = a.wscale[o], b = a.bias ? a.bias[o] : 0.0f;
        for (int64_t t = 0; t < nt; ++t)
          a.y[(t0 + t) * a.M + o] = static_cast<float>(acc[t]) * sw * sx[t] + b;
      }
  }
}
}  // namespace i8_generic

#ifdef FITFORMER_INT8_X86
// ---- AVX2: vpmaddwd on sign-extended 16-bit pairs, bytes (0, 2) and (1, 3) of each quad.
#pragma GCC push_options
#pragma GCC target("avx2,fma,no-avx512f")
namespace i8_avx2 {
constexpr int64_t LANES = 8, CV = 2, TILE = 64;
constexpr int RR = 4, WW = 2;    // 8 accumulators + 2 x 2 inputs + 2 broadcasts of 16 ymm
constexpr int BIAS_CODE = 0;
typedef __m256i vint;
inline vint vzero() { return _mm256_setzero_si256(); }
struct XIn { __m256i even, odd; };
inline XIn xload(const int32_t* p) {
  const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(p));
  return {_mm256_srai_epi16(_mm256_slli_epi16(x, 8), 8), _mm256_srai_epi16(x, 8)};
}
inline void mac(vint& acc, const XIn& x, const int32_t* w2) {
  acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x.even, _mm256_set1_epi32(w2[0])));
  acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x.odd, _mm256_set1_epi32(w2[1])));
}
inline void vstore(int32_t* p, vint v) { _mm256_store_si256(reinterpret_cast<__m256i*>(p), v); }
#include "hp_linear_int8_body.h"
}  // namespace i8_avx2
#pragma GCC pop_options

// ---- AVX-512 VNNI: vpdpbusd, unsigned inputs xq + 128 times signed weights.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")
namespace i8_vnni {
constexpr int64_t LANES = 16, CV = 4, TILE = 64;
constexpr int RR = 4, WW = 1;    // 16 accumulators + 4 inputs + 1 broadcast of 32 zmm
constexpr int BIAS_CODE = 128;
typedef __m512i vint;
inline vint vzero() { return _mm512_setzero_si512(); }
typedef __m512i XIn;
inline XIn xload(const int32_t* p) { return _mm512_load_si512(p); }
inline void mac(vint& acc, const XIn& x, const int32_t* w4) {
  acc = _mm512_dpbusd_epi32(acc, x, _mm512_set1_epi32(w4[0]));
}
inline void vstore(int32_t* p, vint v) { _mm512_store_si512(p, v); }
#include "hp_linear_int8_body.h"
}  // namespace i8_vnni
#pragma GCC pop_options
#endif  // FITFORMER_INT8_X86

// The int8 path this CPU runs best: VNNI needs AVX-512 F/BW/VL/DQ + VNNI, AVX2 needs AVX2.
// `isa` (the fp32 kernel's code: 0 generic, 1 avx2, 2 avx512) caps it, so that
// FITFORMER_CPU_ISA selects the int8 path too.
int64_t int8_path(int64_t isa) {
#ifdef FITFORMER_INT8_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool vnni = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                    __builtin_cpu_supports("avx512vnni");
  if (isa >= 2 && vnni) return I8_VNNI;
  if (isa >= 1 && avx2) return I8_AVX2;
#else
  (void)isa;
#endif
  return I8_GENERIC;
}

const int32_t* i32(const at::Tensor& t, const char* name, int64_t n) {
  TORCH_CHECK(t.scalar_type() == at::kInt && t.is_contiguous() && t.numel() == n,
              "hp_linear_int8: ", name, " must be contiguous int32 with ", n, " entries");
  return t.data_ptr<int32_t>();
}

at::Tensor hp_linear_int8(const at::Tensor& x, const at::Tensor& qptr, int64_t r,
                          const at::Tensor& qcols, const at::Tensor& w4, const at::Tensor& w2,
                          const at::Tensor& wsum, const at::Tensor& wscale,
                          const std::optional<at::Tensor>& bias, int64_t out_features,
                          int64_t isa) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "hp_linear_int8: x must be contiguous float32 (T, N)");
  TORCH_CHECK(r >= 1 && out_features >= 0, "hp_linear_int8: bad r or out_features");
  const int64_t Mb = (out_features + r - 1) / r;
  TORCH_CHECK(qptr.scalar_type() == at::kLong && qptr.is_contiguous() && qptr.numel() == Mb + 1,
              "hp_linear_int8: qptr must be contiguous int64 with ", Mb + 1, " entries");
  const int64_t E = qptr.data_ptr<int64_t>()[Mb];
  Int8Args a{};
  a.x = x.data_ptr<float>();
  a.T = x.size(0);
  a.N = x.size(1);
  a.M = out_features;
  a.Mb = Mb;
  a.r = r;
  a.Nq = (a.N + 3) / 4;
  a.qptr = qptr.data_ptr<int64_t>();
  a.qcols = i32(qcols, "qcols", E);
  a.w4 = i32(w4, "w4", E * r);
  const int32_t* w2p = i32(w2, "w2", 2 * E * r);
  a.wsum = i32(wsum, "wsum", Mb * r);
  TORCH_CHECK(wscale.scalar_type() == at::kFloat && wscale.is_contiguous() &&
                  wscale.numel() == out_features,
              "hp_linear_int8: wscale must be contiguous float32 with ", out_features, " entries");
  a.wscale = wscale.data_ptr<float>();
  a.bias = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous() &&
                    bias->numel() == out_features,
                "hp_linear_int8: bias must be contiguous float32 with ", out_features, " entries");
    a.bias = bias->data_ptr<float>();
  }
  for (int64_t e = 0; e < E; ++e)
    TORCH_CHECK(a.qcols[e] >= 0 && a.qcols[e] < a.Nq, "hp_linear_int8: quad ", a.qcols[e],
                " out of range for ", a.N, " inputs");
  at::Tensor y = at::empty({a.T, a.M}, x.options());
  a.y = y.data_ptr<float>();
  if (a.T == 0 || a.M == 0) return y;
  const int64_t path = int8_path(isa);
  using Fn = void (*)(const Int8Args&, int64_t, int64_t);
  Fn fn = &i8_generic::items;
  int64_t tile = i8_generic::TILE;
#ifdef FITFORMER_INT8_X86
  if (path == I8_AVX2) { fn = &i8_avx2::items; tile = i8_avx2::TILE; a.w4 = w2p; }
  if (path == I8_VNNI) { fn = &i8_vnni::items; tile = i8_vnni::TILE; }
#endif
  const int64_t n_tiles = (a.T + tile - 1) / tile;
  const int64_t threads = at::get_num_threads();
  a.row_splits = std::min<int64_t>(Mb, std::max<int64_t>(1, (threads + n_tiles - 1) / n_tiles));
  a.rows_per_split = (Mb + a.row_splits - 1) / a.row_splits;
  at::parallel_for(0, n_tiles * a.row_splits, 1,
                   [&](int64_t begin, int64_t end) { fn(a, begin, end); });
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fitformer, m) {
  m.def("hp_linear_int8(Tensor x, Tensor qptr, int r, Tensor qcols, Tensor w4, Tensor w2, "
        "Tensor wsum, Tensor wscale, Tensor? bias, int out_features, int isa) -> Tensor");
  m.def("int8_path(int isa) -> int", &int8_path);
}

TORCH_LIBRARY_IMPL(fitformer, CPU, m) { m.impl("hp_linear_int8", &hp_linear_int8); }
