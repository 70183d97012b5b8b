// HP sparse linear layer for the CPU: y[T, M] = x[T, N] @ W[M, N]^T + b[M], W given in the
// row-grouped form that fitformer.kernels.cpu builds from the HP in-memory format.
//
// Layout (all contiguous):
//   group_ptr[Mb + 1]  int64  for output block row j (rows j*r .. j*r+r-1), its kept weights
//                             per row are entries [group_ptr[j], group_ptr[j+1]) of every row
//                             of the block (the balance of HP: one count per block row, no
//                             per-row pointer);
//   shared[Mb]         bool   all rows of block row j keep the same columns (HP with d2 = 1);
//   row_base[M]        int64  offset of row o's first entry in cols/values;
//   cols[nnz]          int32  input column of each kept weight;
//   values[nnz]        float  its value (fp32, exact for fp32 and bf16 layers).
//
// Strategy: tokens in SIMD lanes. A tile of TILE tokens of x is transposed into xt[N][TILE]
// (fp32); every output row accumulates values[e] * xt[cols[e]] into TILE lanes held in
// registers; the rows of one block row read the same few stripes of xt, which stay in L1.
// Work per tile is the number of kept weights (both HP levels are exploited), and tiles are
// split across threads by at::parallel_for (torch's intra-op pool, torch.set_num_threads).
#include <torch/library.h>
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <cstdint>
#include <type_traits>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <cstring>
#include <memory>

namespace {

constexpr int64_t LANES = 16;            // floats per vector (512 bits; split by the compiler)
constexpr int64_t VECS = 8;              // vectors per tile
constexpr int64_t TILE = LANES * VECS;   // tokens per tile
typedef float vfloat __attribute__((vector_size(LANES * sizeof(float)), aligned(64)));

inline float to_float(float v) { return v; }
inline float to_float(c10::BFloat16 v) { return static_cast<float>(v); }

#ifdef __AVX512F__
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
#endif

// xt[n][t] = x[t0 + t][n] for t < nt (rows of x have stride N); lanes t >= nt are zero.
template <typename scalar_t>
void load_tile(const scalar_t* x, int64_t N, int64_t t0, int64_t nt, float* xt) {
  int64_t t_full = 0, n_full = 0;
#ifdef __AVX512F__
  t_full = nt / 16 * 16;
  n_full = N / 16 * 16;
  __m512 r[16];
  for (int64_t t = 0; t < t_full; t += 16) {
    for (int64_t n = 0; n < n_full; n += 16) {
      for (int i = 0; i < 16; ++i) r[i] = load16(x + (t0 + t + i) * N + n);
      transpose16(r);
      for (int i = 0; i < 16; ++i) _mm512_store_ps(xt + (n + i) * TILE + t, r[i]);
    }
  }
#endif
  for (int64_t t = 0; t < nt; ++t) {              // the edges (all of it without AVX-512)
    const scalar_t* xr = x + (t0 + t) * N;
    for (int64_t n = (t < t_full ? n_full : 0); n < N; ++n) xt[n * TILE + t] = to_float(xr[n]);
  }
  if (nt < TILE)
    for (int64_t n = 0; n < N; ++n)
      std::memset(xt + n * TILE + nt, 0, sizeof(float) * (TILE - nt));
}

// y[t0 + t][o] = yt[o][t] for t < nt and o in [o0, o1).
template <typename scalar_t>
void store_tile(const float* yt, int64_t M, int64_t o0, int64_t o1, int64_t t0, int64_t nt,
                scalar_t* y) {
  int64_t t_full = 0, o_full = o0;
#ifdef __AVX512F__
  t_full = nt / 16 * 16;
  o_full = o0 + (o1 - o0) / 16 * 16;
  __m512 r[16];
  for (int64_t t = 0; t < t_full; t += 16) {
    for (int64_t o = o0; o < o_full; o += 16) {
      for (int i = 0; i < 16; ++i) r[i] = _mm512_load_ps(yt + (o + i) * TILE + t);
      transpose16(r);
      for (int i = 0; i < 16; ++i) store16(y + (t0 + t + i) * M + o, r[i]);
    }
  }
#endif
  for (int64_t t = 0; t < nt; ++t) {
    scalar_t* yr = y + (t0 + t) * M;
    for (int64_t o = (t < t_full ? o_full : o0); o < o1; ++o)
      yr[o] = static_cast<scalar_t>(yt[o * TILE + t]);
  }
}

template <typename scalar_t>
void hp_linear_kernel(const scalar_t* x, int64_t T, int64_t N,
                      const int64_t* group_ptr, const bool* shared, int64_t Mb, int64_t r,
                      int64_t M,
                      const int64_t* row_base, const int32_t* cols, const float* values,
                      const float* bias, scalar_t* y) {
  const int64_t n_tiles = (T + TILE - 1) / TILE;
  if (n_tiles == 0 || Mb == 0) return;
  // Few tiles (short inputs): also split the block rows, so every thread has work.
  const int64_t threads = at::get_num_threads();
  const int64_t row_splits = std::min<int64_t>(Mb, std::max<int64_t>(1, (threads + n_tiles - 1) / n_tiles));
  const int64_t rows_per_split = (Mb + row_splits - 1) / row_splits;
  at::parallel_for(0, n_tiles * row_splits, 1, [&](int64_t item_begin, int64_t item_end) {
    // Uninitialised (every lane is written before it is read); 64-byte aligned.
    std::unique_ptr<vfloat[]> xt_buf(new vfloat[N * VECS]);
    std::unique_ptr<vfloat[]> yt_buf(new vfloat[M * VECS]);
    float* xt = reinterpret_cast<float*>(xt_buf.get());
    float* yt = reinterpret_cast<float*>(yt_buf.get());
    const vfloat* xv = xt_buf.get();
    vfloat* yv = yt_buf.get();
    for (int64_t item = item_begin; item < item_end; ++item) {
      const int64_t tile = item / row_splits, split = item % row_splits;
      const int64_t t0 = tile * TILE;
      const int64_t nt = std::min(TILE, T - t0);
      const int64_t j0 = split * rows_per_split, j1 = std::min(Mb, j0 + rows_per_split);
      if (j0 >= j1) continue;
      load_tile(x, N, t0, nt, xt);
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t count = group_ptr[j + 1] - group_ptr[j];
        const int64_t row_end = std::min(M, (j + 1) * r);
        int64_t o = j * r;
        if (shared[j]) {
          // Every row of this block row keeps the same columns (HP with d2 = 1, cbb,
          // block): two rows per pass share each load of x_t.
          for (; o + 1 < row_end; o += 2) {
            const int32_t* c = cols + row_base[o];
            const float* v0 = values + row_base[o];
            const float* v1 = values + row_base[o + 1];
            vfloat a[VECS], d[VECS];
            const float b0 = bias ? bias[o] : 0.0f, b1 = bias ? bias[o + 1] : 0.0f;
            for (int64_t q = 0; q < VECS; ++q) { a[q] = vfloat{} + b0; d[q] = vfloat{} + b1; }
            for (int64_t e = 0; e < count; ++e) {
              const vfloat* xc = xv + static_cast<int64_t>(c[e]) * VECS;
              const float w0 = v0[e], w1 = v1[e];
              for (int64_t q = 0; q < VECS; ++q) {
                const vfloat xq = xc[q];
                a[q] += w0 * xq;
                d[q] += w1 * xq;
              }
            }
            for (int64_t q = 0; q < VECS; ++q) {
              yv[o * VECS + q] = a[q];
              yv[(o + 1) * VECS + q] = d[q];
            }
          }
        }
        for (; o < row_end; ++o) {
          const int64_t base = row_base[o];
          const int32_t* c = cols + base;
          const float* v = values + base;
          vfloat a[VECS];
          const float b = bias ? bias[o] : 0.0f;
          for (int64_t q = 0; q < VECS; ++q) { a[q] = vfloat{} + b; }
          for (int64_t e = 0; e < count; ++e) {
            const vfloat* xc = xv + static_cast<int64_t>(c[e]) * VECS;
            const float w = v[e];
            for (int64_t q = 0; q < VECS; ++q) a[q] += w * xc[q];
          }
          for (int64_t q = 0; q < VECS; ++q) yv[o * VECS + q] = a[q];
        }
      }
      store_tile(yt, M, j0 * r, std::min(M, j1 * r), t0, nt, y);
    }
  });
}

at::Tensor hp_linear(const at::Tensor& x, const at::Tensor& group_ptr,
                     const at::Tensor& shared, int64_t r,
                     const at::Tensor& row_base, const at::Tensor& cols,
                     const at::Tensor& values, const std::optional<at::Tensor>& bias,
                     int64_t out_features) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "hp_linear: x must be 2-D and contiguous");
  TORCH_CHECK(group_ptr.scalar_type() == at::kLong && row_base.scalar_type() == at::kLong,
              "hp_linear: group_ptr and row_base must be int64");
  TORCH_CHECK(shared.scalar_type() == at::kBool && shared.numel() == group_ptr.numel() - 1,
              "hp_linear: shared must be bool with one entry per block row");
  TORCH_CHECK(cols.scalar_type() == at::kInt, "hp_linear: cols must be int32");
  TORCH_CHECK(values.scalar_type() == at::kFloat, "hp_linear: values must be float32");
  TORCH_CHECK(row_base.numel() == out_features, "hp_linear: row_base must have M entries");
  const int64_t T = x.size(0), N = x.size(1), M = out_features;
  const int64_t Mb = group_ptr.numel() - 1;
  const float* b = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == M,
                "hp_linear: bias must be float32 with M entries");
    b = bias->data_ptr<float>();
  }
  at::Tensor y = at::empty({T, M}, x.options());
  if (T == 0 || M == 0) return y;
  if (x.scalar_type() == at::kFloat) {
    hp_linear_kernel<float>(x.data_ptr<float>(), T, N, group_ptr.data_ptr<int64_t>(),
                            shared.data_ptr<bool>(), Mb, r,
                            M, row_base.data_ptr<int64_t>(), cols.data_ptr<int32_t>(),
                            values.data_ptr<float>(), b, y.data_ptr<float>());
  } else if (x.scalar_type() == at::kBFloat16) {
    hp_linear_kernel<c10::BFloat16>(x.data_ptr<c10::BFloat16>(), T, N,
                                    group_ptr.data_ptr<int64_t>(),
                            shared.data_ptr<bool>(), Mb, r, M,
                                    row_base.data_ptr<int64_t>(), cols.data_ptr<int32_t>(),
                                    values.data_ptr<float>(), b,
                                    y.data_ptr<c10::BFloat16>());
  } else {
    TORCH_CHECK(false, "hp_linear: x must be float32 or bfloat16, got ", x.scalar_type());
  }
  return y;
}

}  // namespace

TORCH_LIBRARY(fitformer, m) {
  m.def("hp_linear(Tensor x, Tensor group_ptr, Tensor shared, int r, Tensor row_base, Tensor cols, "
        "Tensor values, Tensor? bias, int out_features) -> Tensor");
}

TORCH_LIBRARY_IMPL(fitformer, CPU, m) { m.impl("hp_linear", &hp_linear); }
