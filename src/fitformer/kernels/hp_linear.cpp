// HP sparse linear layer for the CPU: y[T, M] = x[T, N] @ W[M, N]^T + b[M], W given in the
// row-grouped form that fitformer.kernels.cpu builds from the HP in-memory format.
//
// Tile path (16 tokens or more), layout (all contiguous):
//   group_ptr[Mb + 1]  int64  for output block row j (rows j*r .. j*r+r-1), its kept weights
//                             per row are entries [group_ptr[j], group_ptr[j+1]) of every row
//                             of the block (the balance of HP: one count per block row, no
//                             per-row pointer);
//   shared[Mb]         bool   all rows of block row j keep the same columns (HP with d2 = 1);
//   row_base[M]        int64  offset of row o's first entry in cols/values;
//   cols[nnz]          int32  input column of each kept weight;
//   values[nnz]        float  its value (fp32, exact for fp32 and bf16 layers).
// Strategy: tokens in SIMD lanes. A tile of TILE tokens of x is transposed into xt[N][TILE]
// (fp32); every output row accumulates values[e] * xt[cols[e]] into TILE lanes held in
// registers; the rows of one block row read the same few stripes of xt, which stay in L1.
// Work per tile is the number of kept weights (both HP levels are exploited).
//
// GEMV path (token per row, for a few tokens), layout:
//   gptr[Mg + 1]       int64  row group g (GROUP = 16 output rows) lists the columns
//                             [gptr[g], gptr[g+1]) in which any of its rows keeps a weight;
//   gcols[E]           int32  those columns;
//   gvals[E][GROUP]    float  the GROUP rows' weights in each listed column (zero where
//                             pruned), 64-byte aligned;
//   gbias[Mg * GROUP]  float  the bias padded to whole groups.
// Strategy: outputs in SIMD lanes: y[t][g*16 .. g*16+15] += gvals[e] * x[t][gcols[e]], one
// broadcast input per listed column and token, so level 1 of HP (whole blocks) is exploited
// and kept blocks run dense (the CPU exploits d1 there, as design.md §3 says).
//
// Code paths: the body (hp_linear_body.h) is compiled three times, for generic vectors
// (the compiler's baseline ISA: SSE2 on x86-64, NEON on ARM), AVX2 + FMA (16 registers,
// 8x8 transposes) and AVX-512 (32 registers, 16x16 transposes), and the caller picks one at
// run time among those the CPU supports (cpu_isas). Work is split across torch's intra-op
// threads (at::parallel_for, torch.set_num_threads).
#include <torch/library.h>
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "aligned_buffer.h"
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__)
#define FITFORMER_X86_PATHS 1
#include <immintrin.h>
#endif

namespace {

constexpr int64_t GROUP = 16;                // output rows per GEMV row group
enum Isa : int64_t { GENERIC = 0, AVX2 = 1, AVX512 = 2 };

inline float to_float(float v) { return v; }
inline float to_float(c10::BFloat16 v) { return static_cast<float>(v); }

using AlignedFloats = AlignedBuffer<float>;

template <typename scalar_t>
struct TileArgs {
  const scalar_t* x;
  int64_t T, N, M, Mb, r;
  const int64_t* group_ptr;
  const bool* shared;
  const int64_t* row_base;
  const int32_t* cols;
  const float* values;
  const float* bias;
  scalar_t* y;
  int64_t row_splits, rows_per_split;
};

template <typename scalar_t>
struct GemvArgs {
  const float* xp;                           // xp[col * T + t], fp32
  int64_t T, M;
  const int64_t* gptr;
  const int32_t* gcols;
  const float* gvals;
  const float* bias;                         // padded to whole groups, or null
  scalar_t* y;
};

// ---- generic path: the compiler's baseline vectors, scalar transposes.
namespace isa_generic {
constexpr int64_t LANES = 4, VECS = 12, ROW_CV = 12, PAIR_CV = 4, BLOCK = 1;
constexpr int SHARED_R = 6, SHARED_CV = 2;
#define KEEP_IN_REGISTER(v) ((void)0)
constexpr int GEMV_TT = 2;
typedef float vfloat __attribute__((vector_size(LANES * sizeof(float))));
typedef float vfloat_u __attribute__((vector_size(LANES * sizeof(float)), aligned(4)));
template <typename scalar_t>
inline void transpose_in(const scalar_t*, int64_t, float*, int64_t) {}
template <typename scalar_t>
inline void transpose_out(const float*, int64_t, scalar_t*, int64_t) {}
#include "hp_linear_body.h"
}  // namespace isa_generic

#ifdef FITFORMER_X86_PATHS
// ---- AVX2 + FMA: 16 ymm registers (no AVX-512 instruction or register is used here).
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,no-avx512f")
namespace isa_avx2 {
constexpr int64_t LANES = 8, VECS = 16, ROW_CV = 8, PAIR_CV = 4, BLOCK = 8;
constexpr int SHARED_R = 6, SHARED_CV = 2;   // 12 accumulators + 2 loads + 1 broadcast
#undef KEEP_IN_REGISTER
#define KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))
constexpr int GEMV_TT = 6;
typedef float vfloat __attribute__((vector_size(LANES * sizeof(float))));
typedef float vfloat_u __attribute__((vector_size(LANES * sizeof(float)), aligned(4)));

// In-register transpose of an 8 x 8 fp32 block (unpack / shuffle / 128-bit permute, the
// sequence of the Intel optimisation manual's matrix transposition examples).
inline void transpose8(__m256 r[8]) {
  __m256 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
  for (int i = 0; i < 8; ++i) r[i] = t[i];
}
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const c10::BFloat16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
// fp32 -> bf16 with round to nearest even (NaN stays a quiet NaN), as c10::BFloat16 does.
inline void store8(c10::BFloat16* p, __m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  rounded = _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0), nan);
  // Pack the eight 32-bit halves (all <= 0xFFFF) into 16 bits, lanes in order.
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}
template <typename scalar_t>
inline void transpose_in(const scalar_t* src, int64_t ld, float* dst, int64_t ldd) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = load8(src + i * ld);
  transpose8(r);
  for (int i = 0; i < 8; ++i) _mm256_store_ps(dst + i * ldd, r[i]);
}
template <typename scalar_t>
inline void transpose_out(const float* src, int64_t ldd, scalar_t* dst, int64_t ld) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_load_ps(src + i * ldd);
  transpose8(r);
  for (int i = 0; i < 8; ++i) store8(dst + i * ld, r[i]);
}
#include "hp_linear_body.h"
}  // namespace isa_avx2
#pragma GCC pop_options

// ---- AVX-512 (F, BW, VL, DQ): 32 zmm registers, 16x16 transposes.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2")
namespace isa_avx512 {
constexpr int64_t LANES = 16, VECS = 8, ROW_CV = 8, PAIR_CV = 8, BLOCK = 16;
constexpr int SHARED_R = 2, SHARED_CV = 8;   // 16 accumulators + 8 loads + 1 broadcast
#undef KEEP_IN_REGISTER
#define KEEP_IN_REGISTER(v) __asm__("" : "+v"(v))
constexpr int GEMV_TT = 15;
typedef float vfloat __attribute__((vector_size(LANES * sizeof(float))));
typedef float vfloat_u __attribute__((vector_size(LANES * sizeof(float)), aligned(4)));

// In-register transpose of a 16 x 16 fp32 block (the unpack / shuffle / 128-bit-lane
// shuffle sequence of the Intel optimisation manual's matrix transposition examples).
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int h = 0; h < 16; h += 8) {
    for (int i = 0; i < 4; ++i) {
      t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xDD);
    }
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
  }
}
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const c10::BFloat16* p) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
// fp32 -> bf16 with round to nearest even (NaN stays a quiet NaN), as c10::BFloat16 does.
inline void store16(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void store16(c10::BFloat16* p, __m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  rounded = _mm512_mask_mov_epi32(rounded, nan, _mm512_set1_epi32(0x7FC0));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(rounded));
}
template <typename scalar_t>
inline void transpose_in(const scalar_t* src, int64_t ld, float* dst, int64_t ldd) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = load16(src + i * ld);
  transpose16(r);
  for (int i = 0; i < 16; ++i) _mm512_store_ps(dst + i * ldd, r[i]);
}
template <typename scalar_t>
inline void transpose_out(const float* src, int64_t ldd, scalar_t* dst, int64_t ld) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_load_ps(src + i * ldd);
  transpose16(r);
  for (int i = 0; i < 16; ++i) store16(dst + i * ld, r[i]);
}
#include "hp_linear_body.h"
}  // namespace isa_avx512
#pragma GCC pop_options
#endif  // FITFORMER_X86_PATHS

// Bit i set: code path i runs on this CPU (GENERIC always; AVX2 needs AVX2 + FMA; AVX-512
// needs F, BW, VL and DQ, with the OS saving their registers, which __builtin_cpu_supports
// checks).
int64_t cpu_isas() {
  int64_t mask = 1 << GENERIC;
#ifdef FITFORMER_X86_PATHS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) mask |= 1 << AVX2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    mask |= 1 << AVX512;
#endif
  return mask;
}

void check_isa(int64_t isa) {
  TORCH_CHECK(isa >= GENERIC && isa <= AVX512 && ((cpu_isas() >> isa) & 1),
              "hp_linear: code path ", isa, " does not run on this CPU (supported mask ",
              cpu_isas(), ")");
}

template <typename scalar_t>
void run_tile(int64_t isa, TileArgs<scalar_t> a) {
  using Fn = void (*)(const TileArgs<scalar_t>&, int64_t, int64_t);
  Fn fn = &isa_generic::tile_items<scalar_t>;
  int64_t tile = isa_generic::TILE;
#ifdef FITFORMER_X86_PATHS
  if (isa == AVX2) { fn = &isa_avx2::tile_items<scalar_t>; tile = isa_avx2::TILE; }
  if (isa == AVX512) { fn = &isa_avx512::tile_items<scalar_t>; tile = isa_avx512::TILE; }
#endif
  const int64_t n_tiles = (a.T + tile - 1) / tile;
  if (n_tiles == 0 || a.Mb == 0) return;
  // Few tiles (short inputs): also split the block rows, so every thread has work.
  const int64_t threads = at::get_num_threads();
  a.row_splits = std::min<int64_t>(a.Mb, std::max<int64_t>(1, (threads + n_tiles - 1) / n_tiles));
  a.rows_per_split = (a.Mb + a.row_splits - 1) / a.row_splits;
  at::parallel_for(0, n_tiles * a.row_splits, 1,
                   [&](int64_t begin, int64_t end) { fn(a, begin, end); });
}

template <typename scalar_t>
void run_gemv(int64_t isa, const GemvArgs<scalar_t>& a, int64_t Mg) {
  using Fn = void (*)(const GemvArgs<scalar_t>&, int64_t, int64_t);
  Fn fn = &isa_generic::gemv_groups<scalar_t>;
#ifdef FITFORMER_X86_PATHS
  if (isa == AVX2) fn = &isa_avx2::gemv_groups<scalar_t>;
  if (isa == AVX512) fn = &isa_avx512::gemv_groups<scalar_t>;
#endif
  // About 16k multiply-adds of GROUP lanes per thread at least: a smaller call is not worth
  // waking a second thread.
  const int64_t work = std::max<int64_t>(1, a.gptr[Mg] * a.T);
  const int64_t grain = std::max<int64_t>(1, Mg * 16384 / work);
  at::parallel_for(0, Mg, grain, [&](int64_t begin, int64_t end) { fn(a, begin, end); });
}

const float* optional_bias(const std::optional<at::Tensor>& bias, int64_t n) {
  if (!bias.has_value() || !bias->defined()) return nullptr;
  TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == n && bias->is_contiguous(),
              "hp_linear: bias must be contiguous float32 with ", n, " entries");
  return bias->data_ptr<float>();
}

at::Tensor hp_linear(const at::Tensor& x, const at::Tensor& group_ptr,
                     const at::Tensor& shared, int64_t r,
                     const at::Tensor& row_base, const at::Tensor& cols,
                     const at::Tensor& values, const std::optional<at::Tensor>& bias,
                     int64_t out_features, int64_t isa) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "hp_linear: x must be 2-D and contiguous");
  TORCH_CHECK(group_ptr.scalar_type() == at::kLong && row_base.scalar_type() == at::kLong,
              "hp_linear: group_ptr and row_base must be int64");
  TORCH_CHECK(shared.scalar_type() == at::kBool && shared.numel() == group_ptr.numel() - 1,
              "hp_linear: shared must be bool with one entry per block row");
  TORCH_CHECK(cols.scalar_type() == at::kInt, "hp_linear: cols must be int32");
  TORCH_CHECK(values.scalar_type() == at::kFloat, "hp_linear: values must be float32");
  TORCH_CHECK(row_base.numel() == out_features, "hp_linear: row_base must have M entries");
  check_isa(isa);
  const int64_t T = x.size(0), N = x.size(1), M = out_features;
  const int64_t Mb = group_ptr.numel() - 1;
  const float* b = optional_bias(bias, M);
  at::Tensor y = at::empty({T, M}, x.options());
  if (T == 0 || M == 0) return y;
  if (x.scalar_type() == at::kFloat) {
    run_tile<float>(isa, {x.data_ptr<float>(), T, N, M, Mb, r, group_ptr.data_ptr<int64_t>(),
                          shared.data_ptr<bool>(), row_base.data_ptr<int64_t>(),
                          cols.data_ptr<int32_t>(), values.data_ptr<float>(), b,
                          y.data_ptr<float>(), 1, Mb});
  } else if (x.scalar_type() == at::kBFloat16) {
    run_tile<c10::BFloat16>(isa, {x.data_ptr<c10::BFloat16>(), T, N, M, Mb, r,
                                  group_ptr.data_ptr<int64_t>(), shared.data_ptr<bool>(),
                                  row_base.data_ptr<int64_t>(), cols.data_ptr<int32_t>(),
                                  values.data_ptr<float>(), b,
                                  y.data_ptr<c10::BFloat16>(), 1, Mb});
  } else {
    TORCH_CHECK(false, "hp_linear: x must be float32 or bfloat16, got ", x.scalar_type());
  }
  return y;
}

at::Tensor hp_gemv(const at::Tensor& x, const at::Tensor& gptr, const at::Tensor& gcols,
                   const at::Tensor& gvals, const std::optional<at::Tensor>& gbias,
                   int64_t out_features, int64_t isa) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "hp_gemv: x must be 2-D and contiguous");
  TORCH_CHECK(gptr.scalar_type() == at::kLong && gcols.scalar_type() == at::kInt,
              "hp_gemv: gptr must be int64 and gcols int32");
  const int64_t M = out_features, Mg = (M + GROUP - 1) / GROUP;
  TORCH_CHECK(gptr.numel() == Mg + 1, "hp_gemv: gptr must have ceil(M / 16) + 1 entries");
  TORCH_CHECK(gvals.scalar_type() == at::kFloat && gvals.is_contiguous() &&
                  gvals.numel() == gcols.numel() * GROUP &&
                  reinterpret_cast<uintptr_t>(gvals.data_ptr()) % 64 == 0,
              "hp_gemv: gvals must be contiguous 64-byte aligned float32 [E, 16]");
  check_isa(isa);
  const int64_t T = x.size(0), N = x.size(1);
  const float* b = optional_bias(gbias, Mg * GROUP);
  TORCH_CHECK(!b || reinterpret_cast<uintptr_t>(b) % 64 == 0,
              "hp_gemv: the padded bias must be 64-byte aligned");
  at::Tensor y = at::empty({T, M}, x.options());
  if (T == 0 || M == 0) return y;
  // xp[n][t] = x[t][n] in fp32: one value per listed column and token, adjacent tokens.
  at::Tensor xp = (T == 1 && x.scalar_type() == at::kFloat)
                      ? x : x.t().to(at::kFloat).contiguous();
  TORCH_CHECK(xp.size(0) * xp.size(1) == T * N, "hp_gemv: bad input");
  const float* xpp = xp.data_ptr<float>();
  if (x.scalar_type() == at::kFloat) {
    run_gemv<float>(isa, {xpp, T, M, gptr.data_ptr<int64_t>(), gcols.data_ptr<int32_t>(),
                          gvals.data_ptr<float>(), b, y.data_ptr<float>()}, Mg);
  } else if (x.scalar_type() == at::kBFloat16) {
    run_gemv<c10::BFloat16>(isa, {xpp, T, M, gptr.data_ptr<int64_t>(),
                                  gcols.data_ptr<int32_t>(), gvals.data_ptr<float>(), b,
                                  y.data_ptr<c10::BFloat16>()}, Mg);
  } else {
    TORCH_CHECK(false, "hp_gemv: x must be float32 or bfloat16, got ", x.scalar_type());
  }
  return y;
}

}  // namespace

TORCH_LIBRARY(fitformer, m) {
  m.def("hp_linear(Tensor x, Tensor group_ptr, Tensor shared, int r, Tensor row_base, Tensor cols, "
        "Tensor values, Tensor? bias, int out_features, int isa) -> Tensor");
  m.def("hp_gemv(Tensor x, Tensor gptr, Tensor gcols, Tensor gvals, Tensor? gbias, "
        "int out_features, int isa) -> Tensor");
  m.def("cpu_isas() -> int", &cpu_isas);
}

TORCH_LIBRARY_IMPL(fitformer, CPU, m) {
  m.impl("hp_linear", &hp_linear);
  m.impl("hp_gemv", &hp_gemv);
}
