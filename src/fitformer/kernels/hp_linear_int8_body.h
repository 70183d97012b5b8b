// The register-blocked body of the int8 HP kernel's x86 paths. hp_linear_int8.cpp includes
// it once per path, inside the path's namespace and compiler target region, after defining:
//   LANES  int32 lanes per vector; CV vectors per pass; TILE tokens per tile (a multiple of
//          LANES * CV); RR rows per pass (sharing every input load); WW 32-bit words per
//          weight entry (1: 4 int8; 2: two 16-bit pairs); BIAS_CODE added to each input code;
//   vint, vzero(), XIn, xload(p), mac(acc, x, w), vstore(p, v).
// Each block row's outputs go to a [r][TILE] float buffer first and then to y token by token
// (r contiguous floats per token) instead of one strided store per output.

#include "hp_linear_int8_quant.h"

void items(const Int8Args& a, int64_t begin, int64_t end) {
  Words xp(a.Nq * TILE);
  alignas(64) float sx[TILE];
  alignas(64) int32_t acc_out[RR][TILE];
  std::vector<float> yt_buf(a.r * TILE);
  float* yt = yt_buf.data();
  for (int64_t item = begin; item < end; ++item) {
    const int64_t tile = item / a.row_splits, split = item % a.row_splits;
    const int64_t t0 = tile * TILE, nt = std::min(TILE, a.T - t0);
    const int64_t j0 = split * a.rows_per_split, j1 = std::min(a.Mb, j0 + a.rows_per_split);
    if (j0 >= j1) continue;
    quantise_tile(a, t0, nt, BIAS_CODE ? 0x80808080u : 0u, xp.get(), sx);
    const int64_t used = (nt + LANES * CV - 1) / (LANES * CV) * CV;   // vectors with tokens
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t rows = std::min(a.r, a.M - j * a.r);
      const int64_t e0 = a.qptr[j], e1 = a.qptr[j + 1];
      for (int64_t i0 = 0; i0 < rows; i0 += RR) {
        const int rr = static_cast<int>(std::min<int64_t>(RR, a.r - i0));  // rows in layout
        for (int64_t p = 0; p < used; p += CV) {
          vint acc[RR][CV];
          for (int i = 0; i < RR; ++i)
            for (int v = 0; v < CV; ++v) acc[i][v] = vzero();
          for (int64_t e = e0; e < e1; ++e) {
            const int32_t* xq = xp.get() + static_cast<int64_t>(a.qcols[e]) * TILE + p * LANES;
            XIn xv[CV];
            for (int v = 0; v < CV; ++v) xv[v] = xload(xq + v * LANES);
            const int32_t* w = a.w4 + (e * a.r + i0) * WW;
            if (rr == RR) {
              for (int i = 0; i < RR; ++i)
                for (int v = 0; v < CV; ++v) mac(acc[i][v], xv[v], w + i * WW);
            } else {
              for (int i = 0; i < rr; ++i)
                for (int v = 0; v < CV; ++v) mac(acc[i][v], xv[v], w + i * WW);
            }
          }
          for (int i = 0; i < RR; ++i)
            for (int v = 0; v < CV; ++v) vstore(acc_out[i] + (p + v) * LANES, acc[i][v]);
        }
        for (int64_t i = 0; i < RR && i0 + i < rows; ++i) {
          const int64_t o = j * a.r + i0 + i;
          const int32_t offset = BIAS_CODE * a.wsum[o];
          const float sw = a.wscale[o], b = a.bias ? a.bias[o] : 0.0f;
          float* yr = yt + (i0 + i) * TILE;
          for (int64_t t = 0; t < TILE; ++t)
            yr[t] = static_cast<float>(acc_out[i][t] - offset) * sw * sx[t] + b;
        }
      }
      float* y0 = a.y + t0 * a.M + j * a.r;
      for (int64_t t = 0; t < nt; ++t)
        for (int64_t i = 0; i < rows; ++i) y0[t * a.M + i] = yt[i * TILE + t];
    }
  }
}
